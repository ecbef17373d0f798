package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/eventstore"
)

// LogInfo describes the event log: its origin (the name its checkpoints are signed under, which a
// node's proof of possession of its event key names), its size and its newest signed checkpoint,
// which anyone may keep and later compare with a verification.
type LogInfo struct {
	Origin     string `json:"origin"`
	Size       uint64 `json:"size"`
	Checkpoint string `json:"checkpoint"`
	// GenesisHash is the hash of the log's first record, which names its first key: whoever reads
	// copies of the log (a node, from NATS) checks the genesis it is given against it.
	GenesisHash []byte `json:"genesis_hash"`
	// VerifierKey is the log key in force as a C2SP note verifier key
	// ("<origin>+<hash>+<base64>"): golang.org/x/mod/sumdb/note and other signed-note tooling
	// open Checkpoint with it.
	VerifierKey string `json:"verifier_key"`
	// LogKeys is the history of log keys: which one signed the records and checkpoints of which
	// positions, so a checkpoint saved before a rotation can still be checked.
	LogKeys []eventstore.KeyInfo `json:"log_keys"`
}

// logInfo serves anyone, without a token: nothing in it is secret (a checkpoint is meant to be
// published), and it is what a witness, an auditor or a node needs; a node holds no user's token
// (it enrolls with a node enrollment token that may do nothing else).
func (s *Server) logInfo(c echo.Context) error {
	if _, err := newQuery(c); err != nil {
		return err
	}
	ctx := c.Request().Context()
	origin, err := s.cfg.Log.Origin(ctx)
	if err != nil {
		return err
	}
	size, note, err := s.cfg.Log.LatestCheckpoint(ctx)
	if err != nil {
		return err
	}
	genesis, err := s.cfg.Log.GenesisHash(ctx)
	if err != nil {
		return err
	}
	keys, err := s.cfg.Log.Keys(ctx)
	if err != nil {
		return err
	}
	info := LogInfo{Origin: origin, Size: size, Checkpoint: note, GenesisHash: genesis, LogKeys: []eventstore.KeyInfo{}}
	for _, k := range keys {
		if k.Purpose != eventstore.PurposeLog {
			continue
		}
		info.LogKeys = append(info.LogKeys, k)
		if k.ValidUntil == nil {
			info.VerifierKey = k.VerifierKey
		}
	}
	return c.JSON(http.StatusOK, info)
}

package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// Any authenticated caller may read the log's origin and newest checkpoint, and the checkpoint is
// signed by the log key in force.
func TestLogInfo(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	e.createOrg(root, "acme", "alice")
	if r := e.call(http.MethodGet, "/api/v1/log", "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("without a token: %d", r.status)
	}
	var info api.LogInfo
	e.must(http.StatusOK, http.MethodGet, "/api/v1/log", e.token("somebody-without-roles"), nil).decode(t, &info)
	keys, err := e.store.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var logKey eventstore.KeyInfo
	for _, k := range keys {
		if k.Purpose == eventstore.PurposeLog && k.ValidUntil == nil {
			logKey = k
		}
	}
	var pub []byte
	recs, _ := e.store.ReadStream(context.Background(), eventstore.LogStream, 1, 1)
	var g eventstore.GenesisPayload
	if err := json.Unmarshal(recs[0].Payload, &g); err != nil {
		t.Fatal(err)
	}
	pub = g.PublicKey
	if !bytes.Equal(info.GenesisHash, recs[0].Hash) || len(info.GenesisHash) != eventstore.HashSize {
		t.Fatalf("genesis_hash %x, the log's first record %x", info.GenesisHash, recs[0].Hash)
	}
	if g.KeyID != logKey.KeyID {
		t.Fatalf("genesis key %s, key in force %s", g.KeyID, logKey.KeyID)
	}
	cp, err := eventstore.OpenCheckpoint(info.Checkpoint, info.Origin, pub)
	if err != nil {
		t.Fatalf("checkpoint does not verify: %v\n%s", err, info.Checkpoint)
	}
	if cp.Size != info.Size || info.Size < 2 || info.Origin != g.Origin {
		t.Fatalf("info %+v, checkpoint size %d", info, cp.Size)
	}
}

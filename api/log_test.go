package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// Anyone may read the log's origin and newest checkpoint (a node that holds no user's token, a
// witness), and the checkpoint is signed by the log key in force.
func TestLogInfo(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	e.createOrg(root, "acme", "alice")
	var info api.LogInfo
	e.must(http.StatusOK, http.MethodGet, "/api/v1/log", "", nil).decode(t, &info)
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

// Standard tooling checks our checkpoints: GET /log publishes the log key as a C2SP note
// verifier key, with which golang.org/x/mod/sumdb/note (none of our code) opens the checkpoint;
// after a rotation the new key opens the new checkpoint, the old one (listed in log_keys with the
// positions it signed) still opens a checkpoint saved before, and neither opens the other's.
func TestLogCheckpointOpensWithStandardNoteTooling(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	e.createOrg(root, "acme", "alice")
	var before api.LogInfo
	e.must(http.StatusOK, http.MethodGet, "/api/v1/log", root, nil).decode(t, &before)
	if !strings.HasPrefix(before.VerifierKey, before.Origin+"+") {
		t.Fatalf("verifier_key %q does not name the origin %q", before.VerifierKey, before.Origin)
	}
	openWith := func(vkey, checkpoint string) (*note.Note, error) {
		v, err := note.NewVerifier(vkey)
		if err != nil {
			t.Fatalf("note.NewVerifier(%q): %v", vkey, err)
		}
		return note.Open([]byte(checkpoint), note.VerifierList(v))
	}
	n, err := openWith(before.VerifierKey, before.Checkpoint)
	if err != nil {
		t.Fatalf("x/mod/sumdb/note does not open the checkpoint with the published key: %v\n%s", err, before.Checkpoint)
	}
	if want := fmt.Sprintf("%s\n%d\n", before.Origin, before.Size); !strings.HasPrefix(n.Text, want) {
		t.Fatalf("opened note text %q, want it to start with %q", n.Text, want)
	}
	if len(before.LogKeys) != 1 || before.LogKeys[0].VerifierKey != before.VerifierKey || before.LogKeys[0].ValidUntil != nil {
		t.Fatalf("log_keys before a rotation: %+v", before.LogKeys)
	}

	rot := e.write(201, http.MethodPost, "/api/v1/keys/rotations", root, map[string]string{"purpose": "log"})
	e.createOrg(root, "globex", "bob")
	var after api.LogInfo
	e.must(http.StatusOK, http.MethodGet, "/api/v1/log", root, nil).decode(t, &after)
	if after.VerifierKey == before.VerifierKey || after.Size <= before.Size {
		t.Fatalf("after the rotation: verifier key %q (before %q), size %d (before %d)", after.VerifierKey, before.VerifierKey, after.Size, before.Size)
	}
	if _, err := openWith(after.VerifierKey, after.Checkpoint); err != nil {
		t.Fatalf("the new key does not open the new checkpoint: %v", err)
	}
	if _, err := openWith(before.VerifierKey, after.Checkpoint); err == nil {
		t.Fatal("the retired key opens a checkpoint signed after the rotation")
	}
	if _, err := openWith(after.VerifierKey, before.Checkpoint); err == nil {
		t.Fatal("the new key opens a checkpoint signed before the rotation")
	}
	if len(after.LogKeys) != 2 {
		t.Fatalf("log_keys after a rotation: %+v", after.LogKeys)
	}
	old, cur := after.LogKeys[0], after.LogKeys[1]
	if old.VerifierKey != before.VerifierKey || old.ValidUntil == nil || *old.ValidUntil != rot.Position+1 ||
		cur.KeyID != rot.ID || cur.ValidFrom != rot.Position+1 || cur.ValidUntil != nil || cur.VerifierKey != after.VerifierKey {
		t.Fatalf("log_keys after the rotation at %d: %+v", rot.Position, after.LogKeys)
	}
	if _, err := openWith(old.VerifierKey, before.Checkpoint); err != nil {
		t.Fatalf("the listed old key does not open the checkpoint saved before the rotation: %v", err)
	}
}

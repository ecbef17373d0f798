package eventstore_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

// After a rotation, records are signed by the new key, the old key is no longer accepted after
// the rotation position, and a second appender that still holds the old key picks up the new one
// from its key directory.
func TestLogKeyRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	dir := eventstore.KeyDir(t.TempDir())
	if err := eventstore.WriteKeyFile(filepath.Join(string(dir), "ed25519-"+e.key.ID()[len("ed25519:"):]+".pem"), e.key); err != nil {
		t.Fatal(err)
	}
	other := startStore(t, e.url, e.key, dir.Load) // another process holding the old key

	if _, err := e.store.Append(ctx, "a", eventstore.NoStream, note(1)); err != nil {
		t.Fatal(err)
	}
	next, err := dir.Create()
	if err != nil {
		t.Fatal(err)
	}
	rot, err := e.store.RotateLogKey(ctx, nil, next)
	if err != nil {
		t.Fatalf("rotate: %v", err)
	}
	res, err := e.store.Append(ctx, "a", eventstore.Exact(1), note(2))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Append(ctx, "b", eventstore.NoStream, note(3)); err != nil {
		t.Fatalf("append by the process that missed the rotation: %v", err)
	}
	recs, err := e.store.ReadAll(ctx, res.FirstPosition, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.KeyID != next.ID() {
			t.Fatalf("record %d signed by %s after the rotation, want %s", r.Position, r.KeyID, next.ID())
		}
	}
	rep := verifyOK(t, e.url)
	if len(rep.Keys) != 2 || rep.Keys[0].ValidUntil == nil || *rep.Keys[0].ValidUntil != rot.LastPosition+1 {
		t.Fatalf("key history = %+v, want the first key valid until %d", rep.Keys, rot.LastPosition+1)
	}
	// Rotating to a key already in the history is refused.
	if _, err := e.store.RotateLogKey(ctx, nil, e.key); !errors.Is(err, eventstore.ErrKeyMismatch) {
		t.Fatalf("rotate back to a retired key: err = %v", err)
	}
	// init with the retired key says so.
	if _, err := eventstore.Init(ctx, pgtest.Pool(t, e.url), e.key, rot.RecordedAt); !errors.Is(err, eventstore.ErrKeyMismatch) {
		t.Fatalf("init with the retired key: err = %v", err)
	}
}

// A record signed with the retired log key after the rotation is rejected by verify.
func TestRetiredKeyRejectedAfterRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	next, _ := eventstore.GenerateSigningKey()
	if _, err := e.store.RotateLogKey(ctx, nil, next); err != nil {
		t.Fatal(err)
	}
	// A store that does not learn about the rotation and signs with the old key anyway: emulate by
	// writing through a store whose known key is the old one and which ignores the head (the
	// KeySource returns the old key under the new id, which the store refuses).
	stale := startStore(t, e.url, e.key, func(context.Context, string) (*eventstore.SigningKey, error) { return e.key, nil })
	if _, err := stale.Append(ctx, "x", eventstore.AnyVersion, note(1)); !errors.Is(err, eventstore.ErrKeyMismatch) {
		t.Fatalf("append with a stale key: err = %v, want ErrKeyMismatch", err)
	}
	verifyOK(t, e.url)
}

func TestProducerKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	nodeKey, _ := eventstore.GenerateSigningKey()
	if _, err := e.store.AddKey(ctx, nil, eventstore.PurposeNode, "node-1", nodeKey); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.AddKey(ctx, nil, eventstore.PurposeNode, "node-1", nodeKey); !errors.Is(err, eventstore.ErrInvalidEvent) {
		t.Fatalf("adding a key twice: err = %v", err)
	}
	if _, err := e.store.AddKey(ctx, nil, eventstore.PurposeLog, "", nodeKey); !errors.Is(err, eventstore.ErrInvalidEvent) {
		t.Fatalf("adding a log key: err = %v", err)
	}
	rotated, _ := eventstore.GenerateSigningKey()
	if _, err := e.store.RotateKey(ctx, nil, eventstore.PurposeNode, "node-1", nodeKey, rotated); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.RevokeKey(ctx, nil, rotated.ID(), "node removed"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.RevokeKey(ctx, nil, rotated.ID(), "again"); !errors.Is(err, eventstore.ErrInvalidEvent) {
		t.Fatalf("revoking twice: err = %v", err)
	}
	if _, err := e.store.RevokeKey(ctx, nil, e.key.ID(), "no"); !errors.Is(err, eventstore.ErrInvalidEvent) {
		t.Fatalf("revoking the log key: err = %v", err)
	}
	rep := verifyOK(t, e.url)
	if len(rep.Keys) != 3 {
		t.Fatalf("key history has %d keys, want 3: %+v", len(rep.Keys), rep.Keys)
	}
	keys, err := e.store.Keys(ctx)
	if err != nil || len(keys) != 3 {
		t.Fatalf("Keys() = %v, %v", keys, err)
	}
}

func TestKeyFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "k.pem")
	k, created, err := eventstore.LoadOrCreateKeyFile(p)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600 (%v)", st.Mode().Perm(), err)
	}
	again, created, err := eventstore.LoadOrCreateKeyFile(p)
	if err != nil || created || again.ID() != k.ID() {
		t.Fatalf("reload: created %v err %v id %s want %s", created, err, again.ID(), k.ID())
	}
	if err := eventstore.WriteKeyFile(p, k); err == nil {
		t.Fatal("WriteKeyFile overwrote an existing key")
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := eventstore.LoadKeyFile(p); !errors.Is(err, eventstore.ErrKeyFile) {
		t.Fatalf("world-readable key: err = %v, want ErrKeyFile", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "junk.pem"), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := eventstore.LoadKeyFile(filepath.Join(dir, "junk.pem")); !errors.Is(err, eventstore.ErrKeyFile) {
		t.Fatalf("junk key: err = %v", err)
	}
}

// A key is registered atomically with the appends it belongs to (a node's enrollment), and a
// conflict on those appends registers nothing.
func TestAddPublicKeyWithAppends(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	origin, err := e.store.Origin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nodeKey, _ := eventstore.GenerateSigningKey()
	p := eventstore.NewKeyAdded(origin, eventstore.PurposeNode, "node-7", nodeKey)
	res, err := e.store.AddPublicKey(ctx, nil, p, eventstore.StreamAppend{StreamID: "node-7", Expected: eventstore.NoStream, Events: []eventstore.EventData{note(1)}})
	if err != nil {
		t.Fatal(err)
	}
	if res.LastPosition != res.FirstPosition+1 {
		t.Fatalf("result %+v, want the key record and the enrollment together", res)
	}
	other, _ := eventstore.GenerateSigningKey()
	_, err = e.store.AddPublicKey(ctx, nil, eventstore.NewKeyAdded(origin, eventstore.PurposeNode, "node-7", other),
		eventstore.StreamAppend{StreamID: "node-7", Expected: eventstore.NoStream, Events: []eventstore.EventData{note(2)}})
	if !errors.Is(err, eventstore.ErrWrongExpectedVersion) {
		t.Fatalf("enrolling twice: err = %v", err)
	}
	keys, _ := e.store.Keys(ctx)
	if len(keys) != 2 {
		t.Fatalf("%d keys after a failed enrollment, want 2", len(keys))
	}
	bad := eventstore.NewKeyAdded(origin, eventstore.PurposeNode, "node-8", other)
	bad.Proof[0] ^= 1
	if _, err := e.store.AddPublicKey(ctx, nil, bad); !errors.Is(err, eventstore.ErrInvalidEvent) {
		t.Fatalf("bad proof: err = %v", err)
	}
	if _, err := e.store.RevokeKeyWith(ctx, nil, nodeKey.ID(), "removed", eventstore.StreamAppend{StreamID: "node-7", Expected: eventstore.Exact(1), Events: []eventstore.EventData{note(3)}}); err != nil {
		t.Fatal(err)
	}
	verifyOK(t, e.url)
}

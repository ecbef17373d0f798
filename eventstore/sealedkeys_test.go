package eventstore_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io/fs"
	"strings"
	"sync"
	"testing"

	"github.com/tunnelplane/tunnelplane/compliance/pii"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

func testKEK(t *testing.T) *pii.FileKEK {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	k, err := pii.NewFileKEK(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Keys sealed in the database open only with the key-encryption key that sealed them, and only
// under the purpose and id they were stored with: a row copied to another id does not open.
func TestSealedKeysOpenOnlyWhereTheyWereSealed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	pool := pgtest.Pool(t, e.url)
	kek := testKEK(t)
	logKeys := &eventstore.SealedKeys{Pool: pool, Purpose: eventstore.KeyPurposeLog, KEK: kek}
	a, err := logKeys.CreateKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := logKeys.CreateKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := logKeys.Load(ctx, a.ID())
	if err != nil || !bytes.Equal(got.Seed(), a.Seed()) {
		t.Fatalf("load %s: %v", a.ID(), err)
	}
	ids, err := logKeys.KeyIDs(ctx)
	if err != nil || len(ids) != 2 || !(ids[0] < ids[1]) || (ids[0] != a.ID() && ids[0] != b.ID()) {
		t.Fatalf("ids %v, %v", ids, err)
	}
	if _, err := logKeys.Load(ctx, "ed25519:0000000000000000"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("an unknown id: %v", err)
	}
	// The token keys are another purpose: none of the log's.
	tokenKeys := &eventstore.SealedKeys{Pool: pool, Purpose: eventstore.KeyPurposeToken, KEK: kek}
	if _, err := tokenKeys.Load(ctx, a.ID()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a log key as a token key: %v", err)
	}
	// Another key-encryption key: refused, saying why.
	other := &eventstore.SealedKeys{Pool: pool, Purpose: eventstore.KeyPurposeLog, KEK: testKEK(t)}
	if _, err := other.Load(ctx, a.ID()); err == nil || !strings.Contains(err.Error(), "--key-encryption-key-file") {
		t.Fatalf("another KEK: %v", err)
	}
	// A sealed seed moved under another purpose or id does not open.
	if _, err := pool.Exec(ctx, `INSERT INTO control_keys (purpose, key_id, kek_id, sealed)
		SELECT 'token', key_id, kek_id, sealed FROM control_keys WHERE purpose = 'log' AND key_id = $1`, a.ID()); err != nil {
		t.Fatal(err)
	}
	if _, err := tokenKeys.Load(ctx, a.ID()); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a log key's row copied to the token keys opened: %v", err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO control_keys (purpose, key_id, kek_id, sealed)
		SELECT purpose, 'ed25519:1111111111111111', kek_id, sealed FROM control_keys WHERE purpose = 'log' AND key_id = $1`, a.ID()); err != nil {
		t.Fatal(err)
	}
	if _, err := logKeys.Load(ctx, "ed25519:1111111111111111"); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a row copied to another id opened: %v", err)
	}
	// The seed is never stored in clear.
	var sealed []byte
	if err := pool.QueryRow(ctx, `SELECT sealed FROM control_keys WHERE purpose = 'log' AND key_id = $1`, a.ID()).Scan(&sealed); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, a.Seed()) {
		t.Fatal("the seed is in the row in clear")
	}
}

// Replicas racing to store a shared secret all get the one stored first.
func TestSharedSecretIsTheFirstStored(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	keys := &eventstore.SealedKeys{Pool: pgtest.Pool(t, e.url), Purpose: eventstore.KeyPurposeLog, KEK: testKEK(t)}
	got := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() {
			var err error
			got[i], err = keys.SharedSecret(ctx, eventstore.KeyPurposeSubjectsKEK, "key", func() ([]byte, error) {
				b := make([]byte, 32)
				_, err := rand.Read(b)
				return b, err
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for i := range got {
		if len(got[i]) != 32 || !bytes.Equal(got[i], got[0]) {
			t.Fatalf("replica %d got another secret", i)
		}
	}
}

// A log key rotated by one process through the shared store is the other's at once: its next
// append signs with the new key, loaded from the database.
func TestSealedKeysFollowARotationByAnotherProcess(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	keys := &eventstore.SealedKeys{Pool: pgtest.Pool(t, e.url), Purpose: eventstore.KeyPurposeLog, KEK: testKEK(t)}
	if _, err := keys.Import(ctx, e.key); err != nil {
		t.Fatal(err)
	}
	other := startStore(t, e.url, e.key, keys.Load)
	next, err := keys.CreateKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.RotateLogKey(ctx, nil, next); err != nil {
		t.Fatal(err)
	}
	res, err := other.Append(ctx, "b", eventstore.NoStream, note(1))
	if err != nil {
		t.Fatalf("the other process's append after the rotation: %v", err)
	}
	recs, err := other.ReadAll(ctx, res.LastPosition, 1)
	if err != nil || len(recs) != 1 || recs[0].KeyID != next.ID() {
		t.Fatalf("signed by %v (want %s): %v", recs, next.ID(), err)
	}
}

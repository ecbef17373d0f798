package evidence

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
}

type testLog struct {
	url   string
	pool  *pgxpool.Pool
	store *eventstore.Store
	keys  eventstore.KeyDir
	key   *eventstore.SigningKey
}

func newTestLog(t *testing.T) *testLog {
	t.Helper()
	ctx := context.Background()
	u := pgtest.NewDatabase(t)
	pool := pgtest.Pool(t, u)
	keys := eventstore.KeyDir(filepath.Join(t.TempDir(), "keys"))
	key, err := keys.Create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eventstore.Init(ctx, pool, key, time.Now()); err != nil {
		t.Fatal(err)
	}
	var types []eventstore.EventType
	for _, et := range domain.EventTypes() {
		types = append(types, eventstore.EventType{Name: et.Name, SchemaVersion: et.SchemaVersion, Upcasters: et.Upcasters})
	}
	st, err := eventstore.New(eventstore.Config{Pool: pool, Key: key, KeySource: keys.Load, Registry: eventstore.MustRegistry(types...)})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Stop)
	return &testLog{url: u, pool: pool, store: st, keys: keys, key: key}
}

// orgs appends n organizations named prefix-i, one batch each, and returns the log's size.
func (l *testLog) orgs(t *testing.T, prefix string, n int) uint64 {
	t.Helper()
	var size uint64
	for i := range n {
		org := uuid.Must(uuid.NewV7()).String()
		b, _ := json.Marshal(domain.OrganizationCreated{OrgID: org, Name: fmt.Sprintf("%s-%d", prefix, i), CreatedBy: "root"})
		res, err := l.store.Append(context.Background(), domain.OrgStream(org), eventstore.NoStream, eventstore.EventData{Type: domain.TypeOrganizationCreated, Payload: b})
		if err != nil {
			t.Fatal(err)
		}
		size = res.LastPosition + 1
	}
	return size
}

func (l *testLog) rotate(t *testing.T) {
	t.Helper()
	next, err := l.keys.Create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.store.RotateLogKey(context.Background(), nil, next); err != nil {
		t.Fatal(err)
	}
	l.key = next
}

func (l *testLog) export(t *testing.T, w Window) (string, ExportResult) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "bundle.tar.zst")
	res, err := Export(context.Background(), ExportConfig{Pool: l.pool, Log: l.store, Key: l.key, Actor: "auditor-liaison"}, w, out)
	if err != nil {
		t.Fatal(err)
	}
	return out, res
}

func readFiles(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files, err := ReadBundle(f)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func verifyFile(t *testing.T, path string, opts VerifyOptions) Report {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := Verify(f, opts)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// hasProblem reports whether rep names kind at pos (nil: anywhere, or no position).
func hasProblem(rep Report, pos *uint64, kind string) bool {
	for _, p := range rep.Problems {
		if p.Kind == kind && (pos == nil || (p.Position != nil && *p.Position == *pos)) {
			return true
		}
	}
	return false
}

// A bundle of a window in the middle of a log whose log key was rotated and which holds another
// key's record verifies offline; its export is recorded with the bundle's hash; a window given
// as times selects the records recorded between them.
func TestExportThenVerify(t *testing.T) {
	t.Parallel()
	l := newTestLog(t)
	l.orgs(t, "a", 5)
	l.rotate(t)
	nodeKey, _ := eventstore.GenerateSigningKey()
	if _, err := l.store.AddKey(context.Background(), nil, eventstore.PurposeNode, "n1", nodeKey); err != nil {
		t.Fatal(err)
	}
	mid := l.orgs(t, "b", 6)
	l.orgs(t, "c", 4)

	path, res := l.export(t, Window{From: 3, To: mid - 1})
	rep := verifyFile(t, path, VerifyOptions{})
	if !rep.OK() {
		t.Fatalf("a fresh bundle does not verify: %v", rep.Problems)
	}
	if m := res.Manifest; m.From != 3 || m.To != mid-1 || m.Records != mid-3 || m.WindowCheckpoint != mid || m.NewestCheckpoint <= mid || m.KeyRecords != 1 {
		t.Fatalf("manifest %+v", m)
	}
	raw, _ := os.ReadFile(path)
	sum := sha256.Sum256(raw)
	recs, err := l.store.ReadAll(context.Background(), res.Position, 1)
	if err != nil || len(recs) != 1 || recs[0].Type != domain.TypeExportCreated {
		t.Fatalf("no export.created at %d: %v %v", res.Position, recs, err)
	}
	var ev domain.ExportCreated
	var meta domain.Metadata
	_ = json.Unmarshal(recs[0].Payload, &ev)
	_ = json.Unmarshal(recs[0].Metadata, &meta)
	if ev.BundleSHA256 != hex.EncodeToString(sum[:]) || ev.From != 3 || ev.To != mid-1 || ev.ExportID != res.Manifest.ExportID || meta.Actor != "auditor-liaison" {
		t.Fatalf("export.created %+v by %+v, bundle sha256 %x", ev, meta, sum)
	}
	// The whole log, including the export record just made.
	last := res.Position
	path, _ = l.export(t, Window{From: 0, To: last})
	if rep := verifyFile(t, path, VerifyOptions{}); !rep.OK() || rep.Records != last+1 {
		t.Fatalf("whole log: %d records, %v", rep.Records, rep.Problems)
	}

	// Times: the records of the "c" organizations.
	all, err := l.store.ReadAll(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var first, lastAt time.Time
	var want []uint64
	for _, r := range all {
		if r.Type == domain.TypeOrganizationCreated && bytes.Contains(r.Payload, []byte(`"c-`)) {
			if first.IsZero() {
				first = r.RecordedAt
			}
			lastAt = r.RecordedAt
			want = append(want, r.Position)
		}
	}
	_, res = l.export(t, Window{FromTime: &first, ToTime: &lastAt})
	if res.Manifest.From != want[0] || res.Manifest.To != want[len(want)-1] {
		t.Fatalf("window by time %s..%s: %d..%d, want %v", first, lastAt, res.Manifest.From, res.Manifest.To, want)
	}
}

// Damage is caught and named: a changed byte in a record, a removed record, a changed manifest,
// a pinned key that is not the log's.
func TestDamageIsNamed(t *testing.T) {
	t.Parallel()
	l := newTestLog(t)
	l.orgs(t, "org", 12)
	path, res := l.export(t, Window{From: 2, To: 10})
	files := readFiles(t, path)
	entries, err := decodeEntries(files[FileRecords])
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, files map[string][]byte, opts VerifyOptions, pos *uint64, kind string) {
		t.Helper()
		rep := VerifyFiles(files, opts)
		if rep.OK() || !hasProblem(rep, pos, kind) {
			t.Fatalf("%s: want %s at %v, got %v", name, kind, pos, rep.Problems)
		}
	}
	clone := func() map[string][]byte {
		out := map[string][]byte{}
		for k, v := range files {
			out[k] = bytes.Clone(v)
		}
		return out
	}

	// One byte of org-7's name (position 8) in records.bin.
	changed := clone()
	i := bytes.Index(changed[FileRecords], []byte(`"org-7"`))
	if i < 0 {
		t.Fatal("org-7 not in the bundle")
	}
	changed[FileRecords][i+5] = '9'
	check("changed byte", changed, VerifyOptions{}, at(8), "hash_mismatch")
	check("changed byte", changed, VerifyOptions{}, nil, "file_hash_mismatch")
	check("changed byte", changed, VerifyOptions{}, at(8), "leaf_mismatch")

	// Position 6 left out.
	removed := clone()
	var rest []Entry
	for _, e := range entries {
		if !bytes.Contains(e.Leaf, []byte(`"org-5"`)) {
			rest = append(rest, e)
		}
	}
	removed[FileRecords] = encodeEntries(rest)
	check("removed record", removed, VerifyOptions{}, at(6), "missing")

	// The manifest claims a narrower window.
	forged := clone()
	forged[FileManifest] = bytes.Replace(forged[FileManifest], []byte(`"to": 10`), []byte(`"to": 9`), 1)
	check("changed manifest", forged, VerifyOptions{}, nil, "manifest_bad_signature")

	// A pinned key: the log's passes, another fails.
	origin := res.Manifest.Origin
	good, _ := eventstore.NoteVerifierKey(origin, l.key.Public())
	if rep := VerifyFiles(files, VerifyOptions{VerifierKey: good}); !rep.OK() {
		t.Fatalf("the log's own key pinned: %v", rep.Problems)
	}
	other, _ := eventstore.GenerateSigningKey()
	bad, _ := eventstore.NoteVerifierKey(origin, other.Public())
	check("pinned key", files, VerifyOptions{VerifierKey: bad}, nil, "untrusted_key")

	// A bundle that is not zstd cannot be read.
	if _, err := Verify(bytes.NewReader([]byte("not a bundle")), VerifyOptions{}); err == nil || !strings.Contains(err.Error(), ErrBundle.Error()) {
		t.Fatalf("garbage: %v", err)
	}
}

// A log rolled back by an insider, and one rolled back and written again with the real key
// (every record and checkpoint re-signed), export bundles that verify on their own; against a
// checkpoint the auditor saved before, they fail and say so.
func TestTrustedCheckpointCatchesRollbackAndRewrite(t *testing.T) {
	t.Parallel()
	l := newTestLog(t)
	mid := l.orgs(t, "a", 4)
	saved := l.orgs(t, "b", 4)
	_, trusted, err := l.store.LatestCheckpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	path, _ := l.export(t, Window{From: 1, To: saved - 1})
	if rep := verifyFile(t, path, VerifyOptions{TrustedCheckpoint: trusted}); !rep.OK() || rep.TrustedSize != saved {
		t.Fatalf("an honest bundle against the trusted checkpoint: %d %v", rep.TrustedSize, rep.Problems)
	}

	// Rolled back to mid (the export record after saved goes too).
	l.store.Stop()
	rollBackTo(t, l, mid)
	l2 := reopen(t, l)
	path, _ = l2.export(t, Window{From: 1, To: mid - 1})
	if rep := verifyFile(t, path, VerifyOptions{}); !rep.OK() {
		t.Fatalf("the rolled-back log's bundle on its own: %v", rep.Problems)
	}
	rep := verifyFile(t, path, VerifyOptions{TrustedCheckpoint: trusted})
	// The bundle's log holds mid records: position mid is the first one the trusted checkpoint vouches for that it lacks.
	if !hasProblem(rep, at(mid), "rolled_back") {
		t.Fatalf("rolled back: %v", rep.Problems)
	}

	// Written again past saved with the real key.
	l2.orgs(t, "forged", int(saved-mid))
	path, _ = l2.export(t, Window{From: mid, To: saved - 1})
	if rep := verifyFile(t, path, VerifyOptions{}); !rep.OK() {
		t.Fatalf("the rewritten log's bundle on its own: %v", rep.Problems)
	}
	rep = verifyFile(t, path, VerifyOptions{TrustedCheckpoint: trusted})
	if !hasProblem(rep, nil, "rewritten") || !strings.Contains(rep.Problems[0].Detail, fmt.Sprintf("first %d records", saved)) {
		t.Fatalf("rewritten: %v", rep.Problems)
	}
}

// reopen starts a new store on the same database (the old one's idea of the head is stale).
func reopen(t *testing.T, l *testLog) *testLog {
	t.Helper()
	var types []eventstore.EventType
	for _, et := range domain.EventTypes() {
		types = append(types, eventstore.EventType{Name: et.Name, SchemaVersion: et.SchemaVersion, Upcasters: et.Upcasters})
	}
	// The log key in force may be an older one now.
	id, err := eventstore.LogKeyID(context.Background(), l.pool)
	if err != nil {
		t.Fatal(err)
	}
	key, err := l.keys.Load(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	st, err := eventstore.New(eventstore.Config{Pool: l.pool, Key: key, KeySource: l.keys.Load, Registry: eventstore.MustRegistry(types...)})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Stop)
	return &testLog{url: l.url, pool: l.pool, store: st, keys: l.keys, key: key}
}

// rollBackTo rewinds the log to size records as a database superuser can: rows, checkpoints and
// head (the store must be stopped; reopen it after).
func rollBackTo(t *testing.T, l *testLog, size uint64) {
	t.Helper()
	super := pgtest.SuperPool(t, l.url)
	ctx := context.Background()
	for _, q := range []string{
		fmt.Sprintf(`DELETE FROM events WHERE global_position >= %d`, size),
		fmt.Sprintf(`DELETE FROM checkpoints WHERE size > %d`, size),
		fmt.Sprintf(`UPDATE log_head SET next_position = %[1]d, head_hash = (SELECT hash FROM events WHERE global_position = %[1]d - 1),
			frontier = (SELECT frontier FROM checkpoints WHERE size = %[1]d), key_id = (SELECT key_id FROM checkpoints WHERE size = %[1]d)`, size),
	} {
		conn, err := super.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = conn.Exec(ctx, `SET session_replication_role = replica; `+q)
		conn.Release()
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

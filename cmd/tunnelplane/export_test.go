package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelplane/tunnelplane/compliance/evidence"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

// export writes a bundle that verify-export passes with no database; a changed byte is named by
// its position (exit 1), a file that is no bundle cannot be checked (exit 2), and against a
// checkpoint saved before a rollback-and-rewrite with the real key, the re-signed bundle of the
// rewritten log fails (exit 1).
func TestExportAndVerifyExport(t *testing.T) {
	t.Parallel()
	u := pgtest.NewEmptyDatabase(t)
	dir := t.TempDir()
	if r := tp(t, "init", "--database-url", u, "--data-dir", dir); r.code != 0 {
		t.Fatal(r.stderr)
	}
	mid := appendOrgs(t, u, dir, "a", 3)
	saved := appendOrgs(t, u, dir, "b", 3)
	r := tp(t, "verify", "--database-url", u, "--data-dir", dir)
	_, note, ok := strings.Cut(r.stdout, "checkpoint (save it elsewhere; check later with verify --checkpoint FILE):\n")
	if r.code != 0 || !ok {
		t.Fatalf("verify: %d\n%s", r.code, r.stdout)
	}
	trusted := filepath.Join(t.TempDir(), "checkpoint")
	if err := os.WriteFile(trusted, []byte(note), 0o600); err != nil {
		t.Fatal(err)
	}
	vkeyLine := "log key in force (C2SP note verifier key, opens the checkpoint below): "
	_, rest, _ := strings.Cut(r.stdout, vkeyLine)
	vkey, _, _ := strings.Cut(rest, "\n")

	bundle := filepath.Join(t.TempDir(), "bundle.tar.zst")
	r = tp(t, "export", "--from", "1", "--to", fmt.Sprint(saved-1), "--out", bundle, "--database-url", u, "--data-dir", dir)
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("%d records (positions 1..%d)", saved-1, saved-1)) {
		t.Fatalf("export: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// No database from here on: a URL nothing answers at.
	offline := []string{"--database-url", "postgres://nobody@127.0.0.1:1/none", "--data-dir", t.TempDir()}
	r = tp(t, append([]string{"verify-export", bundle, "--trusted-checkpoint", trusted, "--vkey", vkey}, offline...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "ok: ") || !strings.Contains(r.stdout, fmt.Sprintf("extends the trusted checkpoint in %s (size %d", trusted, saved)) {
		t.Fatalf("verify-export of a fresh bundle: %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// One byte of org a-2 (position 3) changed, the bundle written again as it was.
	f, _ := os.Open(bundle)
	files, err := evidence.ReadBundle(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(files[evidence.FileRecords], []byte(`"a-2"`))
	files[evidence.FileRecords][i+3] = '7'
	damaged := filepath.Join(t.TempDir(), "damaged.tar.zst")
	var buf bytes.Buffer
	if err := evidence.WriteBundle(&buf, files, timeOf(t, files)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(damaged, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	r = tp(t, append([]string{"verify-export", damaged}, offline...)...)
	if r.code != 1 || !strings.Contains(r.stdout, "FAILED: position 3: hash_mismatch") {
		t.Fatalf("verify-export of a changed byte: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	js := tp(t, append([]string{"verify-export", "--json", damaged}, offline...)...)
	var rep struct {
		OK       bool `json:"ok"`
		Problems []struct {
			Position *uint64 `json:"position"`
			Kind     string  `json:"kind"`
		} `json:"problems"`
	}
	if err := json.Unmarshal([]byte(js.stdout), &rep); err != nil || rep.OK || js.code != 1 || len(rep.Problems) == 0 {
		t.Fatalf("verify-export --json: %d %v\n%s", js.code, err, js.stdout)
	}
	if r := tp(t, append([]string{"verify-export", filepath.Join(dir, "missing.tar.zst")}, offline...)...); r.code != 2 {
		t.Fatalf("a missing bundle: %d\n%s", r.code, r.stderr)
	}
	junk := filepath.Join(t.TempDir(), "junk")
	_ = os.WriteFile(junk, []byte("not a bundle"), 0o600)
	if r := tp(t, append([]string{"verify-export", junk}, offline...)...); r.code != 1 || !strings.Contains(r.stdout, "unreadable") {
		t.Fatalf("a file that is no bundle: %d\n%s", r.code, r.stdout)
	}

	// An insider rolls the log back to mid and writes it again with the real key, then exports.
	rollBack(t, u, mid)
	appendOrgs(t, u, dir, "forged", int(saved-mid)+1)
	forged := filepath.Join(t.TempDir(), "forged.tar.zst")
	if r := tp(t, "export", "--from", fmt.Sprint(mid), "--to", fmt.Sprint(saved), "--out", forged, "--database-url", u, "--data-dir", dir); r.code != 0 {
		t.Fatalf("export of the rewritten log: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := tp(t, append([]string{"verify-export", forged}, offline...)...); r.code != 0 {
		t.Fatalf("the re-signed bundle on its own: %d\n%s", r.code, r.stdout)
	}
	r = tp(t, append([]string{"verify-export", forged, "--trusted-checkpoint", trusted}, offline...)...)
	if r.code != 1 || !strings.Contains(r.stdout, fmt.Sprintf("rewritten: the bundle's first %d records hash to", saved)) {
		t.Fatalf("the re-signed bundle against the trusted checkpoint: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func timeOf(t *testing.T, files map[string][]byte) (at time.Time) {
	t.Helper()
	var m evidence.Manifest
	if err := json.Unmarshal(files[evidence.FileManifest], &m); err != nil {
		t.Fatal(err)
	}
	at, err := time.Parse(time.RFC3339Nano, m.CreatedAt)
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// rollBack rewinds the log to size records as a database superuser can: rows, checkpoints and
// head.
func rollBack(t *testing.T, u string, size uint64) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{
		`SET session_replication_role = replica`,
		fmt.Sprintf(`DELETE FROM events WHERE global_position >= %d`, size),
		fmt.Sprintf(`DELETE FROM checkpoints WHERE size > %d`, size),
		fmt.Sprintf(`UPDATE log_head SET next_position = %[1]d, head_hash = (SELECT hash FROM events WHERE global_position = %[1]d - 1),
			frontier = (SELECT frontier FROM checkpoints WHERE size = %[1]d)`, size),
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

// report writes the file (format from --out's extension), prints its hash and the positions it
// was computed from, records report.generated (the log still verifies), and refuses an unknown
// report.
func TestReportWritesAndRecords(t *testing.T) {
	t.Parallel()
	u := pgtest.NewEmptyDatabase(t)
	dir := t.TempDir()
	if r := tp(t, "init", "--database-url", u, "--data-dir", dir); r.code != 0 {
		t.Fatal(r.stderr)
	}
	appendOrgs(t, u, dir, "r", 3)
	out := filepath.Join(t.TempDir(), "soc2.pdf")
	r := tp(t, "report", "soc2", "--from", "2025-01-01", "--to", "2029-01-01", "--out", out, "--database-url", u, "--data-dir", dir)
	if r.code != 0 {
		t.Fatalf("report: %d %s", r.code, r.stderr)
	}
	file, err := os.ReadFile(out)
	if err != nil || !strings.HasPrefix(string(file), "%PDF-") {
		t.Fatalf("%s: %v %q", out, err, file[:min(len(file), 8)])
	}
	sum := sha256.Sum256(file)
	if !strings.Contains(r.stdout, "sha256 "+hex.EncodeToString(sum[:])) || !strings.Contains(r.stdout, "from log positions 0..") {
		t.Errorf("summary:\n%s", r.stdout)
	}
	csv := tp(t, "report", "iso27001", "--from", "2025-01-01", "--to", "2029-01-01", "--format", "csv", "--database-url", u, "--data-dir", dir)
	if csv.code != 0 || !strings.Contains(csv.stdout, "header,A.5.15 Access control,Event counts in the window") || !strings.Contains(csv.stderr, "sha256 ") {
		t.Errorf("csv to stdout: %d\n%s\n%s", csv.code, csv.stdout, csv.stderr)
	}
	if v := tp(t, "verify", "--database-url", u, "--data-dir", dir); v.code != 0 {
		t.Errorf("verify after two reports: %d %s %s", v.code, v.stdout, v.stderr)
	}
	if bad := tp(t, "report", "pci", "--from", "2025-01-01", "--to", "2029-01-01", "--database-url", u, "--data-dir", dir); bad.code == 0 ||
		!strings.Contains(bad.stderr, "unknown report") {
		t.Errorf("unknown report: %d %s", bad.code, bad.stderr)
	}
}

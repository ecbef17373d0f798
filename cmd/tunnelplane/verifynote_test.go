package main

import (
	"encoding/json"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

// verify publishes the log key as a C2SP note verifier key, in its text and JSON output, and
// golang.org/x/mod/sumdb/note opens the checkpoint verify prints with it.
func TestVerifyPublishesTheNoteVerifierKey(t *testing.T) {
	t.Parallel()
	u := pgtest.NewEmptyDatabase(t)
	dir := t.TempDir()
	if r := tp(t, "init", "--database-url", u, "--data-dir", dir); r.code != 0 {
		t.Fatal(r.stderr)
	}
	appendOrgs(t, u, dir, "a", 2)

	r := tp(t, "verify", "--database-url", u, "--data-dir", dir)
	const intro = "log key in force (C2SP note verifier key, opens the checkpoint below): "
	_, rest, ok := strings.Cut(r.stdout, intro)
	if r.code != 0 || !ok {
		t.Fatalf("verify does not print the verifier key: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	vkey, _, _ := strings.Cut(rest, "\n")
	_, checkpoint, ok := strings.Cut(r.stdout, "checkpoint (save it elsewhere; check later with verify --checkpoint FILE):\n")
	if !ok {
		t.Fatalf("no checkpoint printed:\n%s", r.stdout)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatalf("printed verifier key %q: %v", vkey, err)
	}
	if _, err := note.Open([]byte(checkpoint), note.VerifierList(v)); err != nil {
		t.Fatalf("x/mod/sumdb/note does not open the printed checkpoint with the printed key: %v\n%s", err, checkpoint)
	}
	if !strings.Contains(r.stdout, "key history (positions each key may sign):\n  log   ") {
		t.Fatalf("no key history:\n%s", r.stdout)
	}

	js := tp(t, "verify", "--json", "--database-url", u, "--data-dir", dir)
	var rep struct {
		Checkpoint string `json:"checkpoint"`
		Keys       []struct {
			Purpose     string  `json:"purpose"`
			VerifierKey string  `json:"verifier_key"`
			ValidFrom   uint64  `json:"valid_from"`
			ValidUntil  *uint64 `json:"valid_until"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(js.stdout), &rep); err != nil || len(rep.Keys) != 1 {
		t.Fatalf("verify --json: %v\n%s", err, js.stdout)
	}
	if k := rep.Keys[0]; k.Purpose != "log" || k.VerifierKey != vkey || k.ValidFrom != 0 || k.ValidUntil != nil {
		t.Fatalf("verify --json keys: %+v, want the log key %s from 0", rep.Keys, vkey)
	}
	if _, err := note.Open([]byte(rep.Checkpoint), note.VerifierList(v)); err != nil {
		t.Fatalf("the JSON checkpoint does not open: %v", err)
	}
}

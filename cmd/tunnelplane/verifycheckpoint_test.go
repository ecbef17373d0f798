package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

// appendOrgs appends n organizations, one batch each, signed with the data dir's log key, and
// returns the log's size after them.
func appendOrgs(t *testing.T, u, dir, prefix string, n int) uint64 {
	t.Helper()
	var size uint64
	for i := range n {
		org := uuid.Must(uuid.NewV7()).String()
		b, _ := json.Marshal(domain.OrganizationCreated{OrgID: org, Name: fmt.Sprintf("%s-%d", prefix, i), CreatedBy: "root"})
		size = appendEvents(t, u, dir, domain.OrgStream(org), eventstore.EventData{Type: domain.TypeOrganizationCreated, Payload: b})
	}
	return size
}

// verify prints the current checkpoint, which verify --checkpoint later checks: passed while the
// log grows; failed, naming the size, once the log was rolled back below it (which plain verify
// passes) or rolled back and written again with the real key; failed for a note another key
// signed.
func TestVerifyAgainstASavedCheckpoint(t *testing.T) {
	t.Parallel()
	u := pgtest.NewEmptyDatabase(t)
	dir := t.TempDir()
	if r := tp(t, "init", "--database-url", u, "--data-dir", dir); r.code != 0 {
		t.Fatal(r.stderr)
	}
	mid := appendOrgs(t, u, dir, "a", 3)
	saved := appendOrgs(t, u, dir, "b", 3)

	r := tp(t, "verify", "--database-url", u, "--data-dir", dir)
	const intro = "checkpoint (save it elsewhere; check later with verify --checkpoint FILE):\n"
	_, note, ok := strings.Cut(r.stdout, intro)
	if r.code != 0 || !ok || !strings.Contains(note, fmt.Sprintf("\n%d\n", saved)) {
		t.Fatalf("verify does not print the checkpoint at %d: %d\n%s%s", saved, r.code, r.stdout, r.stderr)
	}
	file := filepath.Join(t.TempDir(), "checkpoint")
	if err := os.WriteFile(file, []byte(note), 0o600); err != nil {
		t.Fatal(err)
	}
	js := tp(t, "verify", "--json", "--database-url", u, "--data-dir", dir)
	var rep struct {
		Checkpoint string `json:"checkpoint"`
	}
	if err := json.Unmarshal([]byte(js.stdout), &rep); err != nil || rep.Checkpoint != note {
		t.Fatalf("verify --json checkpoint %q, want the printed one: %v", rep.Checkpoint, err)
	}

	head := appendOrgs(t, u, dir, "c", 2)
	r = tp(t, "verify", "--checkpoint", file, "--database-url", u, "--data-dir", dir)
	if want := fmt.Sprintf("the log extends the checkpoint in %s (size %d → %d)", file, saved, head); r.code != 0 || !strings.Contains(r.stdout, want) {
		t.Fatalf("verify --checkpoint on a grown log: %d, want %q\n%s%s", r.code, want, r.stdout, r.stderr)
	}
	js = tp(t, "verify", "--json", "--checkpoint", file, "--database-url", u, "--data-dir", dir)
	var jrep struct {
		OK    bool `json:"ok"`
		Saved struct {
			OK    bool     `json:"ok"`
			Proof []string `json:"proof"`
		} `json:"saved_checkpoint"`
	}
	if err := json.Unmarshal([]byte(js.stdout), &jrep); err != nil || !jrep.OK || !jrep.Saved.OK || len(jrep.Saved.Proof) == 0 {
		t.Fatalf("verify --json --checkpoint: %v\n%s", err, js.stdout)
	}

	// Rolled back below the saved size by a superuser: rows, checkpoints and head rewound.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{
		`SET session_replication_role = replica`,
		fmt.Sprintf(`DELETE FROM events WHERE global_position >= %d`, mid),
		fmt.Sprintf(`DELETE FROM checkpoints WHERE size > %d`, mid),
		fmt.Sprintf(`UPDATE log_head SET next_position = %[1]d, head_hash = (SELECT hash FROM events WHERE global_position = %[1]d - 1),
			frontier = (SELECT frontier FROM checkpoints WHERE size = %[1]d)`, mid),
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if r := tp(t, "verify", "--database-url", u, "--data-dir", dir); r.code != 0 {
		t.Fatalf("plain verify on the rolled-back log: %d\n%s", r.code, r.stdout)
	}
	r = tp(t, "verify", "--checkpoint", file, "--database-url", u, "--data-dir", dir)
	if r.code != 1 || !strings.Contains(r.stdout, fmt.Sprintf("FAILED: the checkpoint in %s (size %d)", file, saved)) ||
		!strings.Contains(r.stdout, fmt.Sprintf("holds %d records", mid)) {
		t.Fatalf("verify --checkpoint on a rolled-back log: %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	appendOrgs(t, u, dir, "d", int(head-mid)) // the positions again, with the real key
	r = tp(t, "verify", "--checkpoint", file, "--database-url", u, "--data-dir", dir)
	if r.code != 1 || !strings.Contains(r.stdout, fmt.Sprintf("first %d records hash to", saved)) {
		t.Fatalf("verify --checkpoint on a rewritten log: %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// A note of the right size and origin signed by a key that is not the log's.
	parsed, err := eventstore.ParseCheckpoint(note)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := eventstore.GenerateSigningKey()
	forged, err := eventstore.SignCheckpoint(other, parsed.Origin, parsed.Size, parsed.Root)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(forged), 0o600); err != nil {
		t.Fatal(err)
	}
	r = tp(t, "verify", "--checkpoint", file, "--database-url", u, "--data-dir", dir)
	if r.code != 1 || !strings.Contains(r.stdout, "not signed by a log key") {
		t.Fatalf("verify --checkpoint with a forged note: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := tp(t, "verify", "--checkpoint", filepath.Join(dir, "missing"), "--database-url", u, "--data-dir", dir); r.code != 2 {
		t.Fatalf("verify --checkpoint with no such file: %d\n%s", r.code, r.stderr)
	}
}

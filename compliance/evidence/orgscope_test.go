package evidence

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// tunnels appends n tunnels of an organization, one batch each, with the organization in the
// metadata too; it returns their positions.
func (l *testLog) tunnels(t *testing.T, orgID, prefix string, n int) []uint64 {
	t.Helper()
	var out []uint64
	for i := range n {
		id := uuid.Must(uuid.NewV7()).String()
		b, _ := json.Marshal(domain.TunnelCreated{TunnelID: id, OrgID: orgID, Owner: "alice", Name: fmt.Sprintf("%s-%d", prefix, i),
			Upstream: "http://127.0.0.1:11434", Protocol: "http"})
		m, _ := json.Marshal(domain.Metadata{Actor: "alice", OrgID: orgID})
		res, err := l.store.Append(context.Background(), domain.TunnelStream(id), eventstore.NoStream,
			eventstore.EventData{Type: domain.TypeTunnelCreated, Payload: b, Metadata: m})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, res.LastPosition)
	}
	return out
}

// An organization's bundle holds its records in full and only the leaf hashes of the other
// tenants' (their names appear nowhere in it), yet verifies: every root is recomputed. Removing
// one of the organization's records is named by its position, by verify-export and by the
// Python verifier alike.
func TestOrgScopedBundle(t *testing.T) {
	t.Parallel()
	l := newTestLog(t)
	acme, globex := uuid.Must(uuid.NewV7()).String(), uuid.Must(uuid.NewV7()).String()
	first := l.tunnels(t, acme, "acme-llm", 2)
	theirs := l.tunnels(t, globex, "globex-secret", 3)
	mine := append(first, l.tunnels(t, acme, "acme-chat", 2)...)
	l.rotate(t) // a key record inside the window travels in full
	l.tunnels(t, globex, "globex-later", 1)
	head, err := l.store.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "acme.tar.zst")
	res, err := Export(context.Background(), ExportConfig{Pool: l.pool, Log: l.store, Key: l.key, Actor: "auditor"},
		Window{From: 1, To: head - 1, OrgID: acme}, out)
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest.OrgID != acme || res.Manifest.Records != uint64(len(mine))+1 {
		t.Fatalf("manifest %+v, want %d records of acme and the rotation", res.Manifest, len(mine))
	}
	withheld := withheldSet(res.Manifest.Withheld, 1, head-1)
	for _, p := range theirs {
		if !withheld[p] {
			t.Fatalf("globex's record at %d is not withheld: %+v", p, res.Manifest.Withheld)
		}
	}
	for _, p := range mine {
		if withheld[p] {
			t.Fatalf("acme's record at %d is withheld: %+v", p, res.Manifest.Withheld)
		}
	}
	files := readFiles(t, out)
	for name, b := range files {
		if bytes.Contains(b, []byte("globex")) || bytes.Contains(b, []byte(globex)) {
			t.Fatalf("%s reveals the other tenant", name)
		}
	}
	if rep := verifyFile(t, out, VerifyOptions{}); !rep.OK() {
		t.Fatalf("an org-scoped bundle: %v", rep.Problems)
	}
	recs, _ := l.store.ReadAll(context.Background(), res.Position, 1)
	var ev domain.ExportCreated
	if len(recs) != 1 || json.Unmarshal(recs[0].Payload, &ev) != nil || ev.OrgID != acme {
		t.Fatalf("export.created %+v", ev)
	}

	dir := t.TempDir()
	write := func(name string, f map[string][]byte) string {
		var buf bytes.Buffer
		if err := WriteBundle(&buf, f, time.Now()); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// One of acme's records removed.
	removed := map[string][]byte{}
	for k, v := range files {
		removed[k] = bytes.Clone(v)
	}
	es, _ := decodeEntries(removed[FileRecords])
	es = slices.DeleteFunc(es, func(e Entry) bool { return bytes.Contains(e.Leaf, []byte(`"acme-chat-1"`)) })
	removed[FileRecords] = encodeEntries(es)
	gone := mine[len(mine)-1]
	path := write("removed.tar.zst", removed)
	rep := verifyFile(t, path, VerifyOptions{})
	if !hasProblem(rep, at(gone), "missing") {
		t.Fatalf("removed org record at %d: %v", gone, rep.Problems)
	}
	if err := exec.Command("/usr/bin/python3", "-c", "import cryptography").Run(); err != nil {
		t.Skipf("no python3-cryptography for /usr/bin/python3 (make deps installs it as root): %v", err)
	}
	for _, c := range []struct {
		path string
		want string
	}{{out, ""}, {path, fmt.Sprintf("%d:missing", gone)}} {
		code, named := runPython(t, c.path, "")
		goRep := verifyFile(t, c.path, VerifyOptions{})
		if (code == 0) != goRep.OK() || !slices.Equal(named, goNamed(goRep)) || (c.want != "" && !slices.Contains(named, c.want)) {
			t.Fatalf("%s: Python exit %d %v, Go %v, want %q", c.path, code, named, goRep.Problems, c.want)
		}
	}
}

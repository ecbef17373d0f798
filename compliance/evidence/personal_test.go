package evidence

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/compliance/pii"
	"github.com/tunnelplane/tunnelplane/compliance/pii/sealbox"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// A bundle made with a keyring carries the window's sealed values opened (personal.json), which
// the signed manifest covers: changed, or left out, it is named; the records keep the sealed
// values, and the Python verifier, which does not know the file, still passes the bundle.
func TestPersonalDataInBundles(t *testing.T) {
	t.Parallel()
	l := newTestLog(t)
	kek, _ := pii.NewFileKEK(bytes.Repeat([]byte{4}, 32))
	k, err := pii.New(pii.Config{Pool: l.pool, KEK: kek})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	org := uuid.Must(uuid.NewV7()).String()
	p, _ := json.Marshal(domain.OrganizationCreated{OrgID: org, Name: "acme", CreatedBy: "fay"})
	m, _ := json.Marshal(domain.Metadata{Actor: "fay", ClientIP: "203.0.113.61", UserAgent: "bundle-test/1"})
	if p, m, err = k.SealEvent(ctx, domain.TypeOrganizationCreated, p, m); err != nil {
		t.Fatal(err)
	}
	org1, err := l.store.Append(ctx, domain.OrgStream(org), eventstore.NoStream, eventstore.EventData{Type: domain.TypeOrganizationCreated, Payload: p, Metadata: m})
	if err != nil {
		t.Fatal(err)
	}
	// A node fact: the agent's address sealed by the node to the sealing key of the token's issuer.
	pub, gen, err := k.SealingKey(ctx, "fay")
	if err != nil {
		t.Fatal(err)
	}
	addr, err := sealbox.Seal(pub, "fay", gen, pii.FieldRemoteAddr, "203.0.113.61:7000")
	if err != nil {
		t.Fatal(err)
	}
	p, _ = json.Marshal(domain.AgentConnected{NodeID: "n-1", SessionID: "s-1", OrgID: org, TunnelID: org, TokenID: org, RemoteAddr: addr})
	m, _ = json.Marshal(domain.Metadata{Actor: "node:n-1"})
	res, err := l.store.Append(ctx, domain.NodeFactsStream("n-1"), eventstore.NoStream, eventstore.EventData{Type: domain.TypeAgentConnected, Payload: p, Metadata: m})
	if err != nil {
		t.Fatal(err)
	}
	export := func() (string, map[string][]byte) {
		out := filepath.Join(t.TempDir(), "bundle.tar.zst")
		if _, err := Export(ctx, ExportConfig{Pool: l.pool, Log: l.store, Key: l.key, Actor: "auditor", Personal: k}, Window{From: 0, To: res.LastPosition}, out); err != nil {
			t.Fatal(err)
		}
		return out, readFiles(t, out)
	}
	path, files := export()
	var opened []PersonalValue
	if err := json.Unmarshal(files[FilePersonal], &opened); err != nil {
		t.Fatal(err)
	}
	want := []PersonalValue{{Position: org1.LastPosition, In: "metadata", Field: "client_ip", Value: "203.0.113.61"},
		{Position: org1.LastPosition, In: "metadata", Field: "user_agent", Value: "bundle-test/1"},
		{Position: res.LastPosition, In: "payload", Field: "remote_addr", Value: "203.0.113.61:7000"}}
	if len(opened) != 3 || opened[0] != want[0] || opened[1] != want[1] || opened[2] != want[2] {
		t.Fatalf("personal.json = %+v, want %+v", opened, want)
	}
	if bytes.Contains(files[FileRecords], []byte("203.0.113.61")) {
		t.Fatal("the records hold the plaintext")
	}
	if rep := verifyFile(t, path, VerifyOptions{}); len(rep.Problems) != 0 {
		t.Fatalf("a bundle with personal.json: %+v", rep.Problems)
	}
	if _, err := exec.LookPath("zstd"); err == nil && exec.Command("/usr/bin/python3", "-c", "import cryptography").Run() == nil {
		if code, named := runPython(t, path, ""); code != 0 {
			t.Fatalf("the Python verifier on a bundle with personal.json: %d %v", code, named)
		}
	}
	changed := map[string][]byte{}
	for n, b := range files {
		changed[n] = b
	}
	changed[FilePersonal] = bytes.Replace(files[FilePersonal], []byte("203.0.113.61"), []byte("203.0.113.62"), 1)
	if rep := VerifyFiles(changed, VerifyOptions{}); !hasProblem(rep, nil, "file_hash_mismatch") {
		t.Fatalf("a changed personal.json: %+v", rep.Problems)
	}
	delete(changed, FilePersonal)
	if rep := VerifyFiles(changed, VerifyOptions{}); !hasProblem(rep, nil, "file_hash_mismatch") {
		t.Fatalf("a personal.json left out: %+v", rep.Problems)
	}

	if _, err := k.Erase(ctx, "fay"); err != nil {
		t.Fatal(err)
	}
	_, files = export()
	if bytes.Count(files[FilePersonal], []byte(`"[erased]"`)) != 3 || bytes.Contains(files[FilePersonal], []byte("203.0.113.61")) {
		t.Fatalf("personal.json after erasure:\n%s", files[FilePersonal])
	}
	_ = os.Remove(path)
}

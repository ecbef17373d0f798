package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The README's "Sharing a tunnel" block runs as printed against a control plane holding the
// Operating block's organization and tunnel: a role, a grant, an access key, who can reach the
// tunnel (vic by the grant), and the grant revoked.
func TestReadmeShareATunnelRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	env := startAdminEnv(t)
	env.must(t, "admin", "orgs", "create", "acme")
	env.must(t, "admin", "tunnels", "create", "llm", "--org", "acme", "--upstream", "http://127.0.0.1:11434")
	bin := buildBinary(t)
	script := readmeBlock(t, "## Sharing a tunnel")
	if n := len(commandLines(script)); n != 5 {
		t.Fatalf("the README's sharing block has %d commands, not five", n)
	}
	sh := exec.Command("bash", "-c", "set -euo pipefail\n"+script)
	sh.Env = append(cleanEnv("TUNNELPLANE_API_URL="+env.cp.URL, "TUNNELPLANE_TOKEN="+env.root), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
	out, err := sh.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's sharing block failed: %v\n%s", err, out)
	}
	flat := strings.Join(strings.Fields(string(out)), " ")
	for _, want := range []string{"assigned viewer to vic", "tpk_", "user vic grant grant", "revoked grant"} {
		if !strings.Contains(flat, want) {
			t.Errorf("the README's sharing block printed no %q:\n%s", want, out)
		}
	}
	grants := env.must(t, "admin", "grants", "list", "--tunnel", "llm", "--org", "acme", "--json")
	if strings.Contains(grants.stdout, "vic") {
		t.Errorf("vic's grant is still in force after the block:\n%s", grants.stdout)
	}
}

// commandLines are a shell block's lines that run something (not comments or blank).
func commandLines(script string) []string {
	var out []string
	for _, l := range strings.Split(script, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/logbuf"
	"github.com/tunnelplane/tunnelplane/internal/oidctest"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// loginAs runs tunnelplane login and answers at the provider's page it names, as alice would.
func loginAs(t *testing.T, control, cfgDir, action string) (int, *logbuf.Buffer, *logbuf.Buffer) {
	t.Helper()
	var out, errb logbuf.Buffer
	exit := make(chan int, 1)
	go func() {
		exit <- runIO([]string{"login", "--control", control, "--config-dir", cfgDir}, strings.NewReader(""), &out, &errb)
	}()
	var m []string
	poll.Until(t, 10*time.Second, "the CLI printing the code", func() bool { m = promptLine.FindStringSubmatch(out.String()); return m != nil })
	res, err := http.PostForm(m[1], url.Values{"user_code": {m[2]}, "username": {"alice"}, "action": {action}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("%s at the provider: %s", action, res.Status)
	}
	select {
	case code := <-exit:
		return code, &out, &errb
	case <-time.After(30 * time.Second):
		t.Fatalf("login did not end:\n%s", out.String())
	}
	return 0, nil, nil
}

var promptLine = regexp.MustCompile(`open (\S+) and enter the code (\S+)`)

// jwtLike finds anything shaped like a JWT (a token or an ID token) in output.
var jwtLike = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}`)

// tunnelplane login against a real OIDC provider: the CLI prints where to approve the device code,
// the user approves it at the provider, the CLI stores the user token privately and prints none;
// admin commands then use the stored token, and a grant to the provider's group lets the user
// call the tunnel at the node.
func TestSystemLoginThroughOIDCProvider(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	t.Parallel()
	idp := oidctest.Start(t, oidctest.Options{Users: []oidctest.User{{Subject: "u-42", Name: "Alice Doe", Username: "alice", Groups: []string{"ml-team"}}}})
	sv, _ := startTestServe(t, func(o *serveOptions) { o.cp.OIDCIssuer, o.cp.OIDCClientID = idp.Issuer, "tunnelplane-cli" })
	cfgDir := filepath.Join(t.TempDir(), "home", "tunnelplane")

	// A login the user denies at the provider stores nothing and says so.
	code, out, errb := loginAs(t, sv.CP.URL, cfgDir, "deny")
	if code == 0 || !strings.Contains(errb.String(), "denied") {
		t.Fatalf("denied login: exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	if _, err := os.Stat(filepath.Join(cfgDir, "credentials.json")); !os.IsNotExist(err) {
		t.Fatalf("a denied login stored something: %v", err)
	}
	if code, out, errb = loginAs(t, sv.CP.URL, cfgDir, "approve"); code != 0 {
		t.Fatalf("login: exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	user := domain.ExternalUserID(idp.Issuer, "u-42")
	if !strings.Contains(out.String(), "logged in as "+user+" (Alice Doe)") || !strings.Contains(out.String(), "groups:  ml-team") {
		t.Fatalf("login output:\n%s", out.String())
	}
	if jwtLike.MatchString(out.String() + errb.String()) {
		t.Fatalf("login printed a token:\n%s\n%s", out.String(), errb.String())
	}
	for p, want := range map[string]os.FileMode{cfgDir: 0o700, filepath.Join(cfgDir, "credentials.json"): 0o600} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != want {
			t.Fatalf("%s: %v %v, want mode %v", p, st, err, want)
		}
	}
	var stored struct {
		Logins map[string]struct{ Token string } `json:"logins"`
	}
	b, _ := os.ReadFile(filepath.Join(cfgDir, "credentials.json"))
	if err := json.Unmarshal(b, &stored); err != nil || stored.Logins[sv.CP.URL].Token == "" {
		t.Fatalf("stored: %s %v", b, err)
	}
	tok := stored.Logins[sv.CP.URL].Token

	// Admin commands use the stored login when no token is given (TUNNELPLANE_TOKEN unset here).
	if os.Getenv("TUNNELPLANE_TOKEN") == "" {
		r := tp(t, "admin", "tunnels", "list", "--org", "demo", "--api-url", sv.CP.URL, "--config-dir", cfgDir)
		// The user holds no role in demo yet: authenticated (not 401), refused (403).
		if r.code == 0 || !strings.Contains(r.stderr, "403") || jwtLike.MatchString(r.stdout+r.stderr) {
			t.Fatalf("admin with the stored login: %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		r = tp(t, "admin", "orgs", "list", "--api-url", sv.CP.URL, "--config-dir", cfgDir)
		if r.code != 0 {
			t.Fatalf("admin orgs list with the stored login: %d\n%s", r.code, r.stderr)
		}
		r = tp(t, "admin", "orgs", "list", "--api-url", sv.Node.URL, "--config-dir", cfgDir)
		if r.code == 0 || !strings.Contains(r.stderr, "tunnelplane login") {
			t.Fatalf("the stored login offered to another URL: %d\n%s", r.code, r.stderr)
		}
	}

	// A grant to the provider's group lets the user call the tunnel.
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	call := func() int { return callDemoTunnel(t, client, sv.Node.URL, tok) }
	if s := call(); s != http.StatusNotFound {
		t.Fatalf("before the group grant: %d", s)
	}
	body, _ := json.Marshal(map[string]string{"group": "ml-team", "ttl": "1h"})
	req, _ := http.NewRequest(http.MethodPost, sv.CP.URL+"/api/v1/tunnels/"+sv.Demo.TunnelID+"/grants?org=demo", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+sv.Demo.UserToken)
	req.Header.Set("Content-Type", "application/json")
	gr, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	gr.Body.Close()
	if gr.StatusCode != http.StatusCreated {
		t.Fatalf("group grant: %s", gr.Status)
	}
	poll.Until(t, 10*time.Second, "the group grant letting the logged-in user through", func() bool { return call() == http.StatusOK })
}

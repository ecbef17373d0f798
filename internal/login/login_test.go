package login

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/internal/oidctest"
)

const cli = "tunnelplane-cli"

var alice = oidctest.User{Subject: "u-1", Name: "Alice", Username: "alice", Groups: []string{"ml-team"}}

// answer acts as the user at the provider's device page once the CLI showed the code.
func answer(action string) (func(Prompt), <-chan error) {
	done := make(chan error, 1)
	return func(p Prompt) {
		go func() {
			res, err := http.PostForm(p.URI, url.Values{"user_code": {p.Code}, "username": {"alice"}, "action": {action}})
			if err == nil {
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					err = errors.New(res.Status)
				}
			}
			done <- err
		}()
	}, done
}

func TestDeviceFlowApproved(t *testing.T) {
	t.Parallel()
	idp := oidctest.Start(t, oidctest.Options{Users: []oidctest.User{alice}})
	show, done := answer("approve")
	var shown Prompt
	raw, err := deviceFlow(context.Background(), Config{HTTP: http.DefaultClient, Scopes: DefaultScopes, Show: func(p Prompt) { shown = p; show(p) }},
		api.OIDCSettings{Issuer: idp.Issuer, ClientID: cli})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(shown.URI, idp.Issuer+"/device") || !strings.Contains(shown.Complete, "user_code=") || len(shown.Code) != 9 {
		t.Fatalf("prompt: %+v", shown)
	}
	p, err := oidc.NewProvider(context.Background(), idp.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := p.Verifier(&oidc.Config{ClientID: cli}).Verify(context.Background(), raw)
	if err != nil || tok.Subject != "u-1" {
		t.Fatalf("the ID token: %v %v", tok, err)
	}
}

func TestDeviceFlowDenied(t *testing.T) {
	t.Parallel()
	idp := oidctest.Start(t, oidctest.Options{Users: []oidctest.User{alice}})
	show, done := answer("deny")
	_, err := deviceFlow(context.Background(), Config{HTTP: http.DefaultClient, Scopes: DefaultScopes, Show: show}, api.OIDCSettings{Issuer: idp.Issuer, ClientID: cli})
	if !errors.Is(err, ErrDenied) {
		t.Fatalf("%v, want ErrDenied", err)
	}
	<-done
}

func TestDeviceFlowExpired(t *testing.T) {
	t.Parallel()
	idp := oidctest.Start(t, oidctest.Options{Users: []oidctest.User{alice}, DeviceLifetime: 2 * time.Second})
	start := time.Now()
	_, err := deviceFlow(context.Background(), Config{HTTP: http.DefaultClient, Scopes: DefaultScopes}, api.OIDCSettings{Issuer: idp.Issuer, ClientID: cli})
	if !errors.Is(err, ErrExpired) {
		t.Fatalf("%v, want ErrExpired", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("gave up after %s", d)
	}
}

// slow_down adds 5 s to the interval (RFC 8628 3.5): the second poll comes at least 6 s after the
// first at interval 1 s.
func TestDeviceFlowSlowsDown(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a slow_down")
	}
	t.Parallel()
	idp := oidctest.Start(t, oidctest.Options{Users: []oidctest.User{alice}, SlowDownFirst: true})
	show, done := answer("approve")
	start := time.Now()
	if _, err := deviceFlow(context.Background(), Config{HTTP: http.DefaultClient, Scopes: DefaultScopes, Show: show},
		api.OIDCSettings{Issuer: idp.Issuer, ClientID: cli}); err != nil {
		t.Fatal(err)
	}
	<-done
	if d := time.Since(start); d < 7*time.Second {
		t.Fatalf("logged in after %s: slow_down was not honoured", d)
	}
}

func TestNoDeviceFlowAtTheControlPlaneURL(t *testing.T) {
	t.Parallel()
	_, err := Run(context.Background(), Config{APIURL: "ftp://x"})
	if err == nil || !strings.Contains(err.Error(), "http(s)://") {
		t.Fatalf("%v", err)
	}
}

func TestStoreKeepsOneLoginPerControlPlanePrivately(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "cfg", "tunnelplane")
	exp := time.Now().Add(time.Hour)
	path, err := Save(dir, Credential{APIURL: "http://a:1/", Token: "tok-a", UserID: "u", ExpiresAt: exp})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Save(dir, Credential{APIURL: "http://b:1", Token: "tok-b", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	if _, err := Save(dir, Credential{APIURL: "http://old:1", Token: "tok-old", ExpiresAt: time.Now().Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		st, err := os.Stat(p)
		if err != nil || st.Mode().Perm() != want {
			t.Fatalf("%s: %v %v, want %v", p, st.Mode().Perm(), err, want)
		}
	}
	if c, ok, err := Load(dir, "http://a:1"); err != nil || !ok || c.Token != "tok-a" {
		t.Fatalf("a: %+v %v %v", c, ok, err)
	}
	if c, ok, _ := Load(dir, "http://b:1/"); !ok || c.Token != "tok-b" {
		t.Fatalf("b: %+v", c)
	}
	if _, ok, _ := Load(dir, "http://old:1"); ok {
		t.Fatal("an expired login is used")
	}
	if _, ok, _ := Load(dir, "http://c:1"); ok {
		t.Fatal("a token is offered to another control plane")
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(dir, "http://a:1"); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("a world-readable file: %v", err)
	}
}

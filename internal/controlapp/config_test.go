package controlapp_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/tunnelplane/tunnelplane/internal/controlapp"
)

// --nats-replicas takes what clustered JetStream allows (1 to 5; 0 is the default, 1); anything
// else is refused by name before the control plane connects anywhere.
func TestNATSReplicasAreBounded(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		replicas int
		ok       bool
	}{{0, true}, {1, true}, {3, true}, {5, true}, {6, false}, {-1, false}} {
		err := controlapp.Config{DatabaseURL: "postgres://", DataDir: t.TempDir(), NATSReplicas: c.replicas}.Validate()
		if c.ok && err != nil {
			t.Errorf("replicas %d: %v", c.replicas, err)
		}
		if !c.ok && (!errors.Is(err, controlapp.ErrInvalidConfig) || !strings.Contains(err.Error(), "--nats-replicas")) {
			t.Errorf("replicas %d: %v", c.replicas, err)
		}
	}
}

// --db-max-conns leaves room for the connections the control plane holds of its own (the log
// setup's and the deliveries' advisory locks): fewer than 4 would wait on itself.
func TestDBMaxConnsIsBounded(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		conns int
		ok    bool
	}{{0, true}, {4, true}, {20, true}, {10000, true}, {1, false}, {3, false}, {10001, false}, {-1, false}} {
		err := controlapp.Config{DatabaseURL: "postgres://", DataDir: t.TempDir(), DBMaxConns: c.conns}.Validate()
		if c.ok && err != nil {
			t.Errorf("conns %d: %v", c.conns, err)
		}
		if !c.ok && (!errors.Is(err, controlapp.ErrInvalidConfig) || !strings.Contains(err.Error(), "--db-max-conns")) {
			t.Errorf("conns %d: %v", c.conns, err)
		}
	}
}

// Browser login's flags: --public-url is an origin, --browser-login-origin a pattern, and a
// pattern needs the public URL and the provider (a login has nowhere to start without them).
func TestBrowserLoginFlagsAreChecked(t *testing.T) {
	t.Parallel()
	oidc := func(c *controlapp.Config) { c.OIDCIssuer, c.OIDCClientID = "https://idp.example", "tunnelplane-cli" }
	for _, c := range []struct {
		name string
		mod  func(*controlapp.Config)
		want string // "" for valid
	}{
		{"all set", func(c *controlapp.Config) {
			oidc(c)
			c.PublicURL, c.BrowserLoginOrigins = "https://tp.example", []string{"https://*.nodes.example"}
		}, ""},
		{"public URL with a path", func(c *controlapp.Config) { c.PublicURL = "https://tp.example/api" }, "--public-url"},
		{"public URL with its default port", func(c *controlapp.Config) { c.PublicURL = "https://tp.example:443" }, "--public-url"},
		{"bad pattern", func(c *controlapp.Config) {
			oidc(c)
			c.PublicURL, c.BrowserLoginOrigins = "https://tp.example", []string{"https://*"}
		}, "--browser-login-origin"},
		{"pattern without a public URL", func(c *controlapp.Config) {
			oidc(c)
			c.BrowserLoginOrigins = []string{"https://*.nodes.example"}
		}, "needs --public-url"},
	} {
		cfg := controlapp.Config{DatabaseURL: "postgres://", DataDir: t.TempDir()}
		c.mod(&cfg)
		err := cfg.Validate()
		if c.want == "" && err != nil || c.want != "" && (!errors.Is(err, controlapp.ErrInvalidConfig) || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

// A --nats-url that does not parse is refused before anything connects, and the error does not
// show its password (url.Parse's own error would).
func TestNATSURLIsCheckedWithoutShowingThePassword(t *testing.T) {
	t.Parallel()
	err := controlapp.Config{DatabaseURL: "postgres://", DataDir: t.TempDir(), NATSURL: "nats://control:s3cret@nats:42x2"}.Validate()
	if !errors.Is(err, controlapp.ErrInvalidConfig) || !strings.Contains(err.Error(), "--nats-url") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("%v", err)
	}
	if err := (controlapp.Config{DatabaseURL: "postgres://", DataDir: t.TempDir(), NATSURL: "nats://control:s3cret@nats:4222"}).Validate(); err != nil {
		t.Fatalf("a good --nats-url: %v", err)
	}
}

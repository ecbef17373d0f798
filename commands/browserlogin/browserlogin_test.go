package browserlogin_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/commands/browserlogin"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

func TestPatterns(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		pattern, origin string
		want            bool
	}{
		{"https://*.nodes.example", "https://web.acme.nodes.example", true},
		{"https://*.nodes.example", "https://acme.nodes.example", true},
		{"https://*.nodes.example", "https://nodes.example", false},
		{"https://*.nodes.example", "https://evilnodes.example", false},
		{"https://*.nodes.example", "https://web.acme.nodes.example.evil.example", false},
		{"https://*.nodes.example", "http://web.acme.nodes.example", false},
		{"https://*.nodes.example", "https://web.acme.nodes.example:8443", false},
		{"https://*.nodes.example:8443", "https://web.acme.nodes.example:8443", true},
		{"http://*.localhost:8080", "http://web.acme.localhost:8080", true},
		{"https://app.example", "https://app.example", true},
		{"https://app.example", "https://x.app.example", false},
		{"https://APP.example:443", "https://app.example", true},
	} {
		p, err := browserlogin.ParsePattern(c.pattern)
		if err != nil {
			t.Fatalf("%s: %v", c.pattern, err)
		}
		if got := p.Matches(c.origin); got != c.want {
			t.Errorf("%s matches %s: %v, want %v", c.pattern, c.origin, got, c.want)
		}
	}
	for _, bad := range []string{"", "*.nodes.example", "ftp://*.x.example", "https://*", "https://*.example", "https://a.*.example",
		"https://*.nodes.example/path", "https://x.example/", "https://user@x.example", "https://*.127.0.0.1"} {
		if _, err := browserlogin.ParsePattern(bad); !errors.Is(err, browserlogin.ErrBadPattern) {
			t.Errorf("%q: %v, want refused", bad, err)
		}
	}
}

// A login under way is kept once, taken once (by any replica: the table is shared), and not at
// all once expired.
func TestStoreTakesOnce(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t, pgtest.NewDatabase(t))
	now := time.Now()
	st := &browserlogin.Store{Pool: pool, Now: func() time.Time { return now }}
	other := &browserlogin.Store{Pool: pool, Now: func() time.Time { return now }}
	ctx := context.Background()
	p := browserlogin.Pending{Nonce: browserlogin.Secret(), CodeVerifier: browserlogin.Secret(), Origin: "https://web.acme.nodes.example",
		Path: "/x", ClientState: "s", ExpiresAt: now.Add(time.Minute)}
	state := browserlogin.Secret()
	if err := st.Put(ctx, state, p); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := 0
	for range 8 {
		wg.Go(func() {
			if _, err := other.Take(ctx, state); err == nil {
				mu.Lock()
				got++
				mu.Unlock()
			} else if !errors.Is(err, browserlogin.ErrUnknownState) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got != 1 {
		t.Fatalf("taken %d times, want once", got)
	}
	late := browserlogin.Secret()
	if err := st.Put(ctx, late, p); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	if _, err := st.Take(ctx, late); !errors.Is(err, browserlogin.ErrUnknownState) {
		t.Fatalf("an expired login: %v", err)
	}
	var rows int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM browser_logins`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("rows left: %d %v", rows, err)
	}
}

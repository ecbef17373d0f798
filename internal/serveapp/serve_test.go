package serveapp_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/datadir"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle/lifecycletest"
	"github.com/tunnelplane/tunnelplane/internal/nodeapp"
	"github.com/tunnelplane/tunnelplane/internal/serveapp"
)

// serve, and with it the control plane, the node and the demo, keeps the lifecycle rules: racing
// Starts start it once, Stop stops everything it started (its listeners no longer answer), and a
// stopped serve does not start again.
func TestServeStartStopStress(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	t.Parallel()
	db := pgtest.NewEmptyDatabase(t)
	dir := t.TempDir()
	var last *serveapp.App
	lifecycletest.StartStopStress(t, 2, func() lifecycletest.Component {
		sv, err := serveapp.New(serveapp.Config{
			Control:  controlapp.Config{DatabaseURL: db, DataDir: dir, APIAddr: "127.0.0.1:0"},
			Node:     nodeapp.Config{Name: "node-1", ListenAddr: "127.0.0.1:0", BaseDomain: "localhost"},
			NATSHost: "127.0.0.1", NATSPort: -1, Demo: true, DemoDelay: time.Millisecond,
			Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		last = sv
		return lifecycletest.Component{Start: sv.Start, Stop: sv.Close}
	})
	if last.Node == nil || last.CP == nil {
		return // the last round's Stop won the race: nothing started
	}
	for _, url := range []string{last.Node.URL, last.CP.URL} {
		addr := strings.TrimPrefix(url, "http://")
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still answers after Stop", url)
		}
	}
}

// A second serve on a data dir in use says so at once, naming the first one's pid, and touches
// nothing of it (the first keeps serving).
func TestSecondServeOnADataDirIsRefusedAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	t.Parallel()
	db := pgtest.NewEmptyDatabase(t)
	dir := t.TempDir()
	newServe := func() *serveapp.App {
		sv, err := serveapp.New(serveapp.Config{
			Control:  controlapp.Config{DatabaseURL: db, DataDir: dir, APIAddr: "127.0.0.1:0"},
			Node:     nodeapp.Config{Name: "node-1", ListenAddr: "127.0.0.1:0"},
			NATSHost: "127.0.0.1", NATSPort: -1, Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sv.Close)
		return sv
	}
	first := newServe()
	if err := first.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := newServe().Start(t.Context())
	want := fmt.Sprintf("another tunnelplane serve is using %s (pid %d)", dir, os.Getpid())
	if !errors.Is(err, datadir.ErrInUse) || !strings.Contains(err.Error(), want) {
		t.Fatalf("second serve: %v; want %q", err, want)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the refusal took %v", d)
	}
	resp, err := http.Get(first.CP.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the first serve's /readyz: %d", resp.StatusCode)
	}
}

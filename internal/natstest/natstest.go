// Package natstest gives tests this machine's NATS server (the external one at 127.0.0.1:4222, the
// Debian package, 2.9.x) with a cluster name of their own, so their streams never meet those of
// another test or another installation on the shared server, and removes them afterwards.
package natstest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelplane/tunnelplane/bus/wire"
)

// DefaultURL is where the machine's NATS server listens; TUNNELPLANE_TEST_NATS_URL overrides it.
const DefaultURL = "nats://127.0.0.1:4222"

// URL is the external server's URL.
func URL() string {
	if u := os.Getenv("TUNNELPLANE_TEST_NATS_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// UniqueNames is a cluster name no other test (of this or another run) uses.
func UniqueNames(t testing.TB) wire.Names {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	n, err := wire.NewNames("t" + hex.EncodeToString(b))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// External returns the external server's URL and a unique cluster name whose streams are removed
// when the test ends. Without a reachable server the test fails under CI (make test starts one)
// and is skipped elsewhere.
func External(t testing.TB) (string, wire.Names) {
	t.Helper()
	url := URL()
	nc, err := nats.Connect(url, nats.Timeout(3*time.Second))
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no NATS server at %s (make test starts one): %v", url, err)
		}
		t.Skipf("no NATS server at %s: %v", url, err)
	}
	names := UniqueNames(t)
	t.Cleanup(func() {
		defer nc.Close()
		if err := RemoveStreams(nc, names); err != nil {
			t.Errorf("clean up NATS: %v", err)
		}
	})
	return url, names
}

// RemoveStreams deletes every stream (and bucket) of a cluster name.
func RemoveStreams(nc *nats.Conn, names wire.Names) error {
	if names.Cluster() == "" {
		return errors.New("refusing to remove the default installation's streams")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	var mine []string
	list := js.StreamNames(ctx)
	for name := range list.Name() {
		if strings.HasPrefix(name, names.Cluster()+"_") || strings.HasPrefix(name, "KV_"+names.Cluster()+"_") {
			mine = append(mine, name)
		}
	}
	errs := []error{list.Err()}
	for _, name := range mine {
		if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// OldServer speaks just enough of the NATS client protocol to pass for a server of the given
// version (no such old server can run here): it answers PING and records every subject a client
// publishes to, which would include any JetStream API call.
func OldServer(t testing.TB, version string) (url string, published func() []string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	var mu sync.Mutex
	var subjects []string
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = c.Write([]byte(`INFO {"server_id":"OLD","version":"` + version + `","proto":1,"headers":true,"jetstream":true,"max_payload":1048576}` + "\r\n"))
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					f := strings.Fields(line)
					switch {
					case len(f) == 0:
					case f[0] == "PING":
						_, _ = c.Write([]byte("PONG\r\n"))
					case (f[0] == "PUB" || f[0] == "HPUB") && len(f) > 1:
						mu.Lock()
						subjects = append(subjects, f[1])
						mu.Unlock()
					}
				}
			}()
		}
	}()
	return "nats://" + ln.Addr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), subjects...)
	}
}

// nats-server's JetStream API error codes for a refused roll-up and a refused purge
// (JSStreamRollupFailedF, JSStreamPurgeFailedF in its errors.json; nats.go names neither).
const (
	ErrRollupFailed jetstream.ErrorCode = 10111
	ErrPurgeFailed  jetstream.ErrorCode = 10110
)

// RefusedByStream reports whether err is JetStream's answer code with "not permitted" (what a
// stream with DenyPurge says to a roll-up or a purge), rather than a timeout, a permission
// violation or another failure.
func RefusedByStream(err error, code jetstream.ErrorCode) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == code && strings.Contains(apiErr.Description, "not permitted")
}

// RouteTable is a node's side of the route table (nodebus.RouteTable) for tests: the tunnels it
// holds (Hold), and the routes it was told (Snapshot, Get).
type RouteTable struct {
	mu      sync.Mutex
	held    []string
	changed chan struct{}
	routes  map[string]string // "<tunnel>.<node>" → peer URL
}

// NewRouteTable holds tunnels from the start.
func NewRouteTable(tunnels ...string) *RouteTable {
	return &RouteTable{held: tunnels, changed: make(chan struct{}, 1), routes: map[string]string{}}
}

func (r *RouteTable) HeldTunnels() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.held)
}

func (r *RouteTable) HeldChanged() <-chan struct{} { return r.changed }

// Hold replaces the tunnels held, as agents taking and leaving them would.
func (r *RouteTable) Hold(tunnels ...string) {
	r.mu.Lock()
	r.held = tunnels
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *RouteTable) PutRoute(tunnelID, nodeID, url string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.routes[tunnelID+"."+nodeID] = url
	return true
}

func (r *RouteTable) DeleteRoute(tunnelID, nodeID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.routes, tunnelID+"."+nodeID)
}

func (r *RouteTable) ExpireRoutes(time.Time) int { return 0 }

// Snapshot is a copy of the routes told, by "<tunnel>.<node>".
func (r *RouteTable) Snapshot() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.routes)
}

// Get is the peer URL told for key ("<tunnel>.<node>"), or "".
func (r *RouteTable) Get(key string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.routes[key]
}

package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/nodeapp"
	"github.com/tunnelplane/tunnelplane/internal/poll"
	"github.com/tunnelplane/tunnelplane/internal/serveapp"
)

// A node started with --peer-url puts that URL, not one made of its public URL, into the route
// entries of the tunnels it holds: behind one load balancer each node needs its own.
func TestPeerURLReachesTheRouteTable(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	t.Parallel()
	sv, _ := startTestServe(t)
	d := sv.Demo
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	const peer = "ws://tunnelplane-node-1.peers.test:8081/v1/peer"
	nodeB, err := startNode(ctx, &globals{dataDir: t.TempDir(), stdout: io.Discard, stderr: io.Discard, log: quiet},
		nodeapp.Config{Name: "node-b", ListenAddr: "127.0.0.1:0", NATSURL: sv.NATS.ClientURL(), BaseDomain: "localhost", PeerURL: peer,
			ControlPlane: &controlapp.LocalControlPlane{Store: sv.CP.Log.Store, Service: sv.CP.Service, Actor: serveapp.Actor}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nodeB.Close)
	tok, err := sv.CP.Service.Handlers.IssueAgentToken.Handle(commands.WithActor(ctx, commands.Actor{ID: "demo"}),
		commands.IssueAgentToken{OrgID: d.OrgID, TunnelID: d.TunnelID, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	actx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = agent.Run(actx, agent.Config{NodeURL: nodeB.URL + "/v1/agent", Token: tok.Token, Upstream: d.UpstreamURL,
			HostKeyFingerprint: nodeB.Fingerprint, Logger: quiet, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	}()
	t.Cleanup(func() { stop(); <-done })

	nc, err := nats.Connect(sv.NATS.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, wire.Names{}.RoutesBucket())
	if err != nil {
		t.Fatal(err)
	}
	var entry wire.RouteEntry
	poll.Until(t, 10*time.Second, "node b's route entry", func() bool {
		e, err := kv.Get(ctx, wire.RouteKey(d.TunnelID, nodeB.ID.ID))
		return err == nil && json.Unmarshal(e.Value(), &entry) == nil
	})
	if entry.PeerURL != peer {
		t.Fatalf("node b's route entry names %q, want its --peer-url %q", entry.PeerURL, peer)
	}
	// A peer URL that is not a node's /v1/peer is refused before the node starts.
	if r := tp(t, "node", "--nats-url", "nats://127.0.0.1:1", "--control-url", "http://127.0.0.1:1", "--peer-url", "http://x.test/"); r.code == 0 ||
		!strings.Contains(r.stderr, "--peer-url \"http://x.test/\": want the ws://") {
		t.Errorf("node --peer-url http://x.test/: %d %s", r.code, r.stderr)
	}
}

// --identity-files reads the node id, NATS URL and enrollment token from files named after one
// base (what a StatefulSet's pods find in one shared Secret), refuses what is missing, empty,
// several lines, too large or also given as a flag, and never shows a file's contents.
func TestIdentityFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base := filepath.Join(dir, "tunnelplane-node-0")
	write := func(suffix, v string) {
		if err := os.WriteFile(base+"."+suffix, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	read := func(id, url, tok string) (string, string, string, error) {
		err := readIdentityFiles(base, &id, &url, &tok)
		return id, url, tok, err
	}
	if _, _, _, err := read("", "", ""); err == nil || !strings.Contains(err.Error(), "node-id") {
		t.Fatalf("no files: %v", err)
	}
	write("node-id", "0193f2a4-7c1e-7d3a-9b2e-000000000001\n")
	write("nats-url", "tls://node-x:s3cret@nats:4222\n")
	id, url, tok, err := read("", "", "")
	if err != nil || id != "0193f2a4-7c1e-7d3a-9b2e-000000000001" || url != "tls://node-x:s3cret@nats:4222" || tok != "" {
		t.Fatalf("read %q %q %q %v", id, url, tok, err)
	}
	write("enrollment-token", "tpe_abc")
	if _, _, tok, err := read("", "", ""); err != nil || tok != "tpe_abc" {
		t.Fatalf("enrollment token %q %v", tok, err)
	}
	if _, _, _, err := read("", "nats://other", ""); err == nil || !strings.Contains(err.Error(), "--nats-url") {
		t.Fatalf("given twice: %v", err)
	}
	for name, v := range map[string]string{"empty": " \n", "two lines": "tls://a:s3cret@x\ntls://b", "too large": strings.Repeat("s3cret", 1000)} {
		write("nats-url", v)
		_, _, _, err := read("", "", "")
		if err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: %v", name, err)
		}
	}
	// A file that never ends is read only as far as the limit.
	if err := os.Remove(base + ".nats-url"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", base+".nats-url"); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := read("", "", ""); err == nil || !strings.Contains(err.Error(), "more than 4096 bytes") {
		t.Fatalf("a link to /dev/zero: %v", err)
	}
	if err := os.Remove(base + ".nats-url"); err != nil {
		t.Fatal(err)
	}
	// A file that cannot be read (here a directory in its place) is an error naming it.
	write("nats-url", "tls://node-x:s3cret@nats:4222")
	if err := os.Remove(base + ".enrollment-token"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(base+".enrollment-token", 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := read("", "", ""); err == nil || !strings.Contains(err.Error(), base+".enrollment-token") {
		t.Fatalf("a directory for the enrollment token: %v", err)
	}
}

// The node command reads --identity-files (or TUNNELPLANE_NODE_IDENTITY_FILES) before anything
// else: a bad file stops it with every problem at once and the file's contents shown nowhere, and
// a NATS URL both in a file and on the command line is refused.
func TestNodeIdentityFilesFlagAndEnv(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "tunnelplane-node-1")
	write := func(suffix, v string) {
		if err := os.WriteFile(base+"."+suffix, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("node-id", "0193f2a4-7c1e-7d3a-9b2e-000000000002\n")
	write("nats-url", "\n")
	r := tp(t, "node", "--identity-files", base)
	if r.code == 0 || !strings.Contains(r.stderr, base+".nats-url is empty") || !strings.Contains(r.stderr, "--control-url is required") ||
		strings.Contains(r.stderr, "--nats-url is required") {
		t.Errorf("an empty nats-url file: %d %s", r.code, r.stderr)
	}
	write("nats-url", "nats://node-x:s3cret@127.0.0.1:1\n")
	r = tp(t, "node", "--identity-files", base, "--nats-url", "nats://127.0.0.1:1", "--control-url", "http://127.0.0.1:1")
	if r.code == 0 || !strings.Contains(r.stderr, "the --nats-url flag") {
		t.Errorf("a NATS URL in a file and a flag: %d %s", r.code, r.stderr)
	}
	// Read, the files stand for --nats-url: the node's configuration is validated next, and stops
	// it here.
	r = tp(t, "node", "--identity-files", base, "--control-url", "http://127.0.0.1:1", "--peer-url", "ws://node-1.test/")
	if r.code == 0 || !strings.Contains(r.stderr, "--peer-url") || strings.Contains(r.stderr+r.stdout, "s3cret") {
		t.Errorf("a bad --peer-url after good identity files: %d %s", r.code, r.stderr)
	}
	t.Setenv("TUNNELPLANE_NODE_IDENTITY_FILES", base)
	write("node-id", "")
	if r := tp(t, "node", "--control-url", "http://127.0.0.1:1"); r.code == 0 || !strings.Contains(r.stderr, base+".node-id is empty") {
		t.Errorf("TUNNELPLANE_NODE_IDENTITY_FILES with an empty node-id file: %d %s", r.code, r.stderr)
	}
	if r := tp(t, "node", "--help"); !strings.Contains(r.stdout, "--identity-files") || !strings.Contains(r.stdout, "TUNNELPLANE_NODE_IDENTITY_FILES") ||
		!strings.Contains(r.stdout, "--peer-url") || !strings.Contains(r.stdout, "TUNNELPLANE_NODE_PEER_URL") {
		t.Errorf("node --help does not list --identity-files and --peer-url:\n%s", r.stdout)
	}
}

package bustest_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/tunnelplane/tunnelplane/bus/controlbus"
	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/internal/natstest"
)

// A server older than the minimum is named, with the minimum, before anything is created on it.
func TestEnsureStreamsRefusesAnOldServerBeforeCreatingAnything(t *testing.T) {
	t.Parallel()
	url, published := natstest.OldServer(t, "2.8.4")
	nc := connect(t, url)
	deadline := time.Now().Add(5 * time.Second)
	for !nc.IsConnected() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	err := controlbus.EnsureStreams(ctxT(t), js(t, nc), controlbus.StreamsConfig{})
	if !errors.Is(err, controlbus.ErrServerVersion) || !strings.Contains(err.Error(), "2.8.4") || !strings.Contains(err.Error(), controlbus.MinServerVersion) {
		t.Fatalf("EnsureStreams on a 2.8.4 server: %v; want ErrServerVersion naming 2.8.4 and %s", err, controlbus.MinServerVersion)
	}
	time.Sleep(100 * time.Millisecond)
	if p := published(); len(p) != 0 {
		t.Fatalf("published %v to an unsupported server", p)
	}
}

// A real server with JetStream off is refused with what to do.
func TestEnsureStreamsRefusesAServerWithoutJetStream(t *testing.T) {
	t.Parallel()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	err = controlbus.EnsureStreams(ctxT(t), js(t, connect(t, srv.ClientURL())), controlbus.StreamsConfig{})
	if !errors.Is(err, controlbus.ErrServerVersion) || !strings.Contains(err.Error(), "-js") {
		t.Fatalf("EnsureStreams without JetStream: %v", err)
	}
}

// Streams are stamped with their log; another log under the same cluster name is refused before
// anything changes, a caller without an origin keeps the stamps, and ReplaceForeign starts over.
func TestStreamsOfAnotherLogAreRefused(t *testing.T) {
	t.Parallel()
	n := startNATS(t, controlbus.StreamsConfig{})
	nc := connect(t, n.url())
	j := js(t, nc)
	names := nm(t)
	const logA, logB = "tunnelplane/log/aaaa", "tunnelplane/log/bbbb"
	ensure := func(sc controlbus.StreamsConfig) error {
		sc.Names = names
		return controlbus.EnsureStreams(ctxT(t), j, sc)
	}
	stamps := func() []string {
		var out []string
		for _, s := range []string{names.EventsStream(), names.NodeFactsStream(), names.CommandsStream(), "KV_" + names.NodesBucket()} {
			st, err := j.Stream(ctxT(t), s)
			if err != nil {
				t.Fatalf("stream %s: %v", s, err)
			}
			out = append(out, wire.DescriptionStamp(st.CachedInfo().Config.Description))
		}
		return out
	}
	if err := ensure(controlbus.StreamsConfig{Origin: logA}); err != nil {
		t.Fatal(err)
	}
	if err := ensure(controlbus.StreamsConfig{}); err != nil { // a tool that knows no origin
		t.Fatal(err)
	}
	for i, s := range stamps() {
		if s != logA {
			t.Fatalf("stream %d stamped %q, want %q", i, s, logA)
		}
	}
	err := ensure(controlbus.StreamsConfig{Origin: logB})
	if !errors.Is(err, controlbus.ErrForeignStreams) || !strings.Contains(err.Error(), logA) || !strings.Contains(err.Error(), "--cluster") {
		t.Fatalf("another log's streams: %v", err)
	}
	if origin, err := wire.EventsStreamOrigin(ctxT(t), j, names); err != nil || origin != logA {
		t.Fatalf("after the refusal the events stream names %q (%v), want it unchanged", origin, err)
	}
	if err := ensure(controlbus.StreamsConfig{Origin: logB, ReplaceForeign: true}); err != nil {
		t.Fatal(err)
	}
	for i, s := range stamps() {
		if s != logB {
			t.Fatalf("after replacing, stream %d stamped %q, want %q", i, s, logB)
		}
	}
}

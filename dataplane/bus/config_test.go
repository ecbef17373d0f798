package bus_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/dataplane/bus"
)

// Every configuration reports all of its problems at once, as ErrInvalidConfig.
func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		err  error
		want []string
	}{
		{"embedded", bus.EmbeddedConfig{Port: -2, MaxStore: -1}.Validate(), []string{"Dir", "Port -2", "MaxStore"}},
		{"streams", bus.StreamsConfig{DuplicateWindow: time.Minute, HeartbeatTTL: 100 * time.Millisecond, Replicas: 7}.Validate(),
			[]string{"DuplicateWindow", "HeartbeatTTL", "Replicas"}},
		{"publisher", bus.PublisherConfig{NodeID: "n1", RetryMin: time.Second, RetryMax: time.Millisecond}.Validate(),
			[]string{"NodeID", "Key", "Conn", "SpoolDir", "RetryMin"}},
		{"ingester", bus.IngesterConfig{AckWait: -1}.Validate(), []string{"Store", "Conn", "AckWait"}},
		{"relay", bus.RelayConfig{BatchSize: 5000}.Validate(), []string{"Store", "Conn", "BatchSize"}},
		{"command sender", bus.CommandSenderConfig{Timeout: -1}.Validate(), []string{"Conn", "Timeout"}},
		{"command handlers", bus.CommandHandlersConfig{}.Validate(), []string{"NodeID", "URL", "Publisher", "handler funcs"}},
		{"heartbeater", bus.HeartbeaterConfig{Interval: -1}.Validate(), []string{"Conn", "NodeID", "Interval"}},
		{"registry watcher", bus.RegistryWatcherConfig{Grace: -1}.Validate(), []string{"Conn", "OnLost", "Grace"}},
	}
	for _, tc := range cases {
		if !errors.Is(tc.err, bus.ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", tc.name, tc.err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(tc.err.Error(), w) {
				t.Errorf("%s: %q does not mention %s", tc.name, tc.err, w)
			}
		}
	}
}

func TestCommandsValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cmd bus.Command
		ok  bool
	}{
		{bus.DisconnectAgent{CommandID: "c", TunnelID: "t"}, true},
		{bus.DisconnectAgent{CommandID: "c", TokenID: "k", NodeID: "0190a8f6-2a3c-7c4e-9b1d-3f5e6a7b8c9d"}, true},
		{bus.DisconnectAgent{CommandID: "c"}, false},
		{bus.DisconnectAgent{TunnelID: "t"}, false},
		{bus.DisconnectAgent{CommandID: "c", TunnelID: "t", NodeID: "edge-1"}, false},
		{bus.DrainNode{CommandID: "c", NodeID: "0190a8f6-2a3c-7c4e-9b1d-3f5e6a7b8c9d"}, true},
		{bus.DrainNode{CommandID: "c"}, false},
	} {
		err := tc.cmd.Validate()
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, bus.ErrInvalidCommand)) {
			t.Errorf("%+v: err = %v, want ok=%v", tc.cmd, err, tc.ok)
		}
	}
}

// A server that cannot store its JetStream data does not pretend to be up.
func TestStartEmbeddedRefusesUnusableDir(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := bus.StartEmbedded(ctxT(t), bus.EmbeddedConfig{Dir: file, Port: -1, Logger: testLogger()})
	if err == nil {
		srv.Shutdown()
		t.Fatal("started with a file as its store directory")
	}
	if !errors.Is(err, bus.ErrServer) {
		t.Errorf("err = %v, want ErrServer", err)
	}
}

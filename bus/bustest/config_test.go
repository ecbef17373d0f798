package bustest_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/bus/controlbus"
	"github.com/tunnelplane/tunnelplane/bus/nodebus"
	"github.com/tunnelplane/tunnelplane/bus/wire"
)

// Every configuration reports all of its problems at once, as ErrInvalidConfig.
func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		err     error
		want    []string
		invalid error // the package's ErrInvalidConfig
	}{
		{"embedded", controlbus.EmbeddedConfig{Port: -2, MaxStore: -1}.Validate(), []string{"Dir", "Port -2", "MaxStore"}, controlbus.ErrInvalidConfig},
		{"streams", controlbus.StreamsConfig{DuplicateWindow: time.Minute, HeartbeatTTL: 100 * time.Millisecond, Replicas: 7}.Validate(),
			[]string{"DuplicateWindow", "HeartbeatTTL", "Replicas"}, controlbus.ErrInvalidConfig},
		{"publisher", nodebus.PublisherConfig{NodeID: "n1", RetryMin: time.Second, RetryMax: time.Millisecond}.Validate(),
			[]string{"NodeID", "Key", "Conn", "SpoolDir", "RetryMin"}, nodebus.ErrInvalidConfig},
		{"ingester", controlbus.IngesterConfig{AckWait: -1}.Validate(), []string{"Store", "Conn", "AckWait"}, controlbus.ErrInvalidConfig},
		{"relay", controlbus.RelayConfig{BatchSize: 5000}.Validate(), []string{"Store", "Conn", "BatchSize"}, controlbus.ErrInvalidConfig},
		{"command sender", controlbus.CommandSenderConfig{Timeout: -1}.Validate(), []string{"Conn", "Timeout"}, controlbus.ErrInvalidConfig},
		{"command handlers", nodebus.CommandHandlersConfig{}.Validate(), []string{"NodeID", "URL", "Publisher", "handler funcs"}, nodebus.ErrInvalidConfig},
		{"heartbeater", nodebus.HeartbeaterConfig{Interval: -1}.Validate(), []string{"Conn", "NodeID", "Interval"}, nodebus.ErrInvalidConfig},
		{"registry watcher", controlbus.RegistryWatcherConfig{Grace: -1}.Validate(), []string{"Conn", "OnLost", "Grace"}, controlbus.ErrInvalidConfig},
	}
	for _, tc := range cases {
		if !errors.Is(tc.err, tc.invalid) {
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
		cmd wire.Command
		ok  bool
	}{
		{wire.DisconnectAgent{CommandID: "c", TunnelID: "t"}, true},
		{wire.DisconnectAgent{CommandID: "c", TokenID: "k", NodeID: "0190a8f6-2a3c-7c4e-9b1d-3f5e6a7b8c9d"}, true},
		{wire.DisconnectAgent{CommandID: "c"}, false},
		{wire.DisconnectAgent{TunnelID: "t"}, false},
		{wire.DisconnectAgent{CommandID: "c", TunnelID: "t", NodeID: "edge-1"}, false},
		{wire.DrainNode{CommandID: "c", NodeID: "0190a8f6-2a3c-7c4e-9b1d-3f5e6a7b8c9d"}, true},
		{wire.DrainNode{CommandID: "c"}, false},
	} {
		err := tc.cmd.Validate()
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, wire.ErrInvalidCommand)) {
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
	srv, err := controlbus.StartEmbedded(ctxT(t), controlbus.EmbeddedConfig{Dir: file, Port: -1, Logger: testLogger()})
	if err == nil {
		srv.Shutdown()
		t.Fatal("started with a file as its store directory")
	}
	if !errors.Is(err, controlbus.ErrServer) {
		t.Errorf("err = %v, want ErrServer", err)
	}
}

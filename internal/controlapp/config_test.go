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

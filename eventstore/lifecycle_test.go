package eventstore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle/lifecycletest"
)

// The store keeps the lifecycle rules (concurrent Starts start one appender and one listener,
// Stop waits for both, no restart), and an append after Stop fails with ErrClosed, never hangs.
func TestStoreStartStopStress(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg, err := eventstore.NewRegistry(testTypes()...)
	if err != nil {
		t.Fatal(err)
	}
	pool := pgtest.Pool(t, e.url)
	lifecycletest.StartStopStress(t, 10, func() lifecycletest.Component {
		st, err := eventstore.New(eventstore.Config{Pool: pool, Key: e.key, Registry: reg})
		if err != nil {
			t.Fatal(err)
		}
		return lifecycletest.Component{Start: st.Start, Stop: func() {
			st.Stop()
			if _, err := st.Append(context.Background(), "after-stop", eventstore.AnyVersion, note(1)); !errors.Is(err, eventstore.ErrClosed) {
				t.Errorf("append after Stop: %v, want ErrClosed", err)
			}
		}}
	})
}

package api_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle/lifecycletest"
	"github.com/tunnelplane/tunnelplane/projections"
)

// The API server (its token key refresher) and the projections runner keep the lifecycle rules.
func TestServerAndRunnerStartStopStress(t *testing.T) {
	t.Parallel()
	var cfg api.Config
	e := newEnv(t, func(c *api.Config) { cfg = *c })
	lifecycletest.StartStopStress(t, 5, func() lifecycletest.Component {
		c := cfg
		c.Registry = prometheus.NewRegistry()
		srv, err := api.New(c)
		if err != nil {
			t.Fatal(err)
		}
		return lifecycletest.Component{Start: srv.Start, Stop: srv.Stop}
	})
	lifecycletest.StartStopStress(t, 5, func() lifecycletest.Component {
		r, err := projections.New(projections.Config{Store: e.store, Projections: projections.All()})
		if err != nil {
			t.Fatal(err)
		}
		return lifecycletest.Component{Start: r.Start, Stop: r.Stop}
	})
}

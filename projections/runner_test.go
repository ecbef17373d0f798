package projections_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/logtest"
	"github.com/tunnelplane/tunnelplane/projections"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
}

func event(t *testing.T, e domain.Event) eventstore.EventData {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return eventstore.EventData{Type: e.EventType(), Payload: b}
}

// An event a projection cannot apply stops that projection — status, error, metric — without
// skipping the event, while the other projections carry on.
func TestUnapplicableEventStopsOnlyItsProjection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := logtest.Start(t, 100*time.Millisecond)
	st := log.Store
	reg := prometheus.NewRegistry()
	r, err := projections.New(projections.Config{Store: st, Projections: projections.All(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)

	org := uuid.Must(uuid.NewV7()).String()
	if _, err := st.Append(ctx, domain.OrgStream(org), eventstore.NoStream, event(t, domain.OrganizationCreated{OrgID: org, Name: "acme", CreatedBy: "root"})); err != nil {
		t.Fatal(err)
	}
	// An update of a tunnel the read model never saw created: the log and the model disagree.
	ghost := uuid.Must(uuid.NewV7()).String()
	name := "ghost"
	bad, err := st.Append(ctx, domain.TunnelStream(ghost), eventstore.AnyVersion, event(t, domain.TunnelUpdated{TunnelID: ghost, OrgID: org, Name: &name}))
	if err != nil {
		t.Fatal(err)
	}
	org2 := uuid.Must(uuid.NewV7()).String()
	after, err := st.Append(ctx, domain.OrgStream(org2), eventstore.NoStream, event(t, domain.OrganizationCreated{OrgID: org2, Name: "globex", CreatedBy: "root"}))
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.WaitFor(wctx, after.LastPosition, projections.Orgs, projections.Audit); err != nil {
		t.Fatalf("the other projections stopped too: %v", err)
	}
	if err := r.WaitFor(wctx, after.LastPosition, projections.Tunnels); !errors.Is(err, projections.ErrStopped) {
		t.Fatalf("waiting on the stopped projection: %v, want ErrStopped", err)
	}
	sts, err := r.Statuses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sts {
		if s.Name != projections.Tunnels {
			continue
		}
		if s.Running || s.LastError == "" || s.Position >= int64(bad.FirstPosition) {
			t.Fatalf("tunnels status %+v: want stopped before position %d with an error", s, bad.FirstPosition)
		}
	}
	if n := failures(t, reg, projections.Tunnels); n < 1 {
		t.Fatalf("failure metric = %v", n)
	}
	var lastErr *string
	if err := log.Pool.QueryRow(ctx, `SELECT last_error FROM projection_state WHERE name = 'tunnels'`).Scan(&lastErr); err != nil || lastErr == nil {
		t.Fatalf("the error is not recorded in projection_state: %v", err)
	}
}

func failures(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tunnelplane_projection_failures_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == name {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// AccessCalls is the read model of per-call access records: one row per call of the tunnels
// whose access log is "calls", from the nodes' access.calls_recorded batches.
const AccessCalls = "access_calls"

type accessCallsProjection struct{}

func (accessCallsProjection) Name() string     { return AccessCalls }
func (accessCallsProjection) Tables() []string { return []string{"rm_access_calls"} }
func (accessCallsProjection) Handles(t string) bool {
	return t == domain.TypeAccessCallsRecorded
}

// accessCallsInsert writes a batch's calls in one statement (a batch holds up to
// domain.MaxCallsPerBatch calls; a statement per call would cost a round of parsing each).
const accessCallsInsert = `INSERT INTO rm_access_calls (generation, position, idx, org_id, tunnel_id, node_id, at, caller_kind, caller_id,
	method, route, status, bytes_in, bytes_out, duration_us)
	SELECT $1, $2, c.idx, c.org_id, c.tunnel_id, $3, c.at, c.caller_kind, c.caller_id, c.method, c.route, c.status, c.bytes_in, c.bytes_out, c.duration_us
	FROM unnest($4::int[], $5::text[]::uuid[], $6::text[]::uuid[], $7::timestamptz[], $8::text[], $9::text[], $10::text[], $11::text[],
		$12::int[], $13::bigint[], $14::bigint[], $15::bigint[])
		AS c(idx, org_id, tunnel_id, at, caller_kind, caller_id, method, route, status, bytes_in, bytes_out, duration_us)`

// Apply writes the batch's calls. A batch the ingester would refuse (domain's Validate) is
// skipped whole, as the usage projection skips an invalid window: the log holds it, the read
// model does not show it.
func (accessCallsProjection) Apply(_ context.Context, b *pgx.Batch, gen int, rec eventstore.Record) error {
	e, err := decode(rec)
	if err != nil {
		return err
	}
	ev, ok := e.(*domain.AccessCallsRecorded)
	if !ok || len(ev.Calls) == 0 || ev.Validate() != nil {
		return nil
	}
	n := len(ev.Calls)
	idx, status := make([]int32, n), make([]int32, n)
	org, tun, kind, caller, method, route := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	at := make([]time.Time, n)
	in, out, dur := make([]int64, n), make([]int64, n), make([]int64, n)
	for i, c := range ev.Calls {
		idx[i], status[i] = int32(i), int32(c.Status)
		org[i], tun[i], kind[i], caller[i], method[i], route[i] = c.OrgID, c.TunnelID, c.CallerKind, c.CallerID, c.Method, c.Route
		at[i], in[i], out[i], dur[i] = c.At, c.BytesIn, c.BytesOut, c.DurationUS
	}
	b.Queue(accessCallsInsert, gen, int64(rec.Position), ev.NodeID, idx, org, tun, at, kind, caller, method, route, status, in, out, dur).
		Exec(func(ct pgconn.CommandTag) error {
			if ct.RowsAffected() != int64(n) {
				return fmt.Errorf("%s at position %d wrote %d of %d calls", rec.Type, rec.Position, ct.RowsAffected(), n)
			}
			return nil
		})
	return nil
}

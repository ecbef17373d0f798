package projections

import (
	"context"
	"encoding/json"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// SIEMSinks is the view of the configured SIEM sinks.
const SIEMSinks = "siem_sinks"

type siemSinksProjection struct{}

func (siemSinksProjection) Name() string     { return SIEMSinks }
func (siemSinksProjection) Tables() []string { return []string{"rm_siem_sinks"} }
func (siemSinksProjection) Handles(t string) bool {
	switch t {
	case domain.TypeSIEMSinkConfigured, domain.TypeSIEMSinkUpdated, domain.TypeSIEMSinkRemoved, domain.TypeSIEMDeliverySkipped:
		return true
	}
	return false
}
func (siemSinksProjection) Apply(_ context.Context, b *pgx.Batch, gen int, rec eventstore.Record) error {
	e, err := decode(rec)
	if err != nil {
		return err
	}
	set := func(sql string, sinkID string, args ...any) {
		queue(b, rec, `UPDATE rm_siem_sinks SET `+sql+`, version = $3, updated_at = $4, position = $5 WHERE generation = $1 AND sink_id = $2`,
			append([]any{gen, sinkID, int64(rec.StreamVersion), rec.RecordedAt, int64(rec.Position)}, args...)...)
	}
	switch ev := e.(type) {
	case *domain.SIEMSinkConfigured:
		spec, err := json.Marshal(ev.SIEMSinkSpec)
		if err != nil {
			return err
		}
		queue(b, rec, `INSERT INTO rm_siem_sinks (generation, sink_id, org_id, name, spec, configured_by, configured_at, updated_at, version, position)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9)`,
			gen, ev.SinkID, nullable(ev.OrgID), ev.Name, spec, metadata(rec).Actor, rec.RecordedAt, int64(rec.StreamVersion), int64(rec.Position))
	case *domain.SIEMSinkUpdated:
		spec, err := json.Marshal(ev.SIEMSinkSpec)
		if err != nil {
			return err
		}
		set(`name = $6, spec = $7`, ev.SinkID, ev.Name, spec)
	case *domain.SIEMSinkRemoved:
		set(`removed_at = $4`, ev.SinkID)
	case *domain.SIEMDeliverySkipped:
		set(`skipped = array_append(skipped, $6)`, ev.SinkID, int64(ev.Position))
	}
	return nil
}

package projections

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// Webhooks is the view of the webhook endpoints (secrets sealed only).
const Webhooks = "webhooks"

type webhooksProjection struct{}

func (webhooksProjection) Name() string     { return Webhooks }
func (webhooksProjection) Tables() []string { return []string{"rm_webhooks"} }
func (webhooksProjection) Handles(t string) bool {
	switch t {
	case domain.TypeWebhookEndpointCreated, domain.TypeWebhookEndpointUpdated, domain.TypeWebhookSecretRotated, domain.TypeWebhookEndpointDeleted:
		return true
	}
	return false
}
func (webhooksProjection) Apply(_ context.Context, b *pgx.Batch, gen int, rec eventstore.Record) error {
	e, err := decode(rec)
	if err != nil {
		return err
	}
	set := func(sql string, id string, args ...any) {
		queue(b, rec, `UPDATE rm_webhooks SET `+sql+`, version = $3, updated_at = $4, position = $5 WHERE generation = $1 AND endpoint_id = $2`,
			append([]any{gen, id, int64(rec.StreamVersion), rec.RecordedAt, int64(rec.Position)}, args...)...)
	}
	types := func(t []string) []string {
		if t == nil {
			return []string{}
		}
		return t
	}
	switch ev := e.(type) {
	case *domain.WebhookEndpointCreated:
		queue(b, rec, `INSERT INTO rm_webhooks (generation, endpoint_id, org_id, name, url, types, secret, created_by, created_at, updated_at, version, position, created_position)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11, $11)`,
			gen, ev.EndpointID, ev.OrgID, ev.Name, ev.URL, types(ev.Types), ev.Secret, metadata(rec).Actor, rec.RecordedAt, int64(rec.StreamVersion), int64(rec.Position))
	case *domain.WebhookEndpointUpdated:
		set(`name = $6, url = $7, types = $8`, ev.EndpointID, ev.Name, ev.URL, types(ev.Types))
	case *domain.WebhookSecretRotated:
		set(`previous_secret = secret, secret = $6, rotated_at = $4`, ev.EndpointID, ev.Secret)
	case *domain.WebhookEndpointDeleted:
		set(`deleted_at = $4`, ev.EndpointID)
	}
	return nil
}

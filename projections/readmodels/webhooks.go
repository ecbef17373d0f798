package readmodels

import (
	"context"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
)

// Webhook is an endpoint (view webhooks) and what its deliverer last recorded (webhook_cursors).
// Secret and PreviousSecret are sealed; the API never shows them.
type Webhook struct {
	ID              string     `db:"endpoint_id"`
	OrgID           string     `db:"org_id"`
	Name            string     `db:"name"`
	URL             string     `db:"url"`
	Types           []string   `db:"types"`
	Secret          string     `db:"secret"`
	PreviousSecret  string     `db:"previous_secret"`
	RotatedAt       *time.Time `db:"rotated_at"`
	CreatedBy       string     `db:"created_by"`
	CreatedAt       time.Time  `db:"created_at"`
	UpdatedAt       time.Time  `db:"updated_at"`
	DeletedAt       *time.Time `db:"deleted_at"`
	Version         int64      `db:"version"`
	Position        int64      `db:"position"`
	CreatedPosition int64      `db:"created_position"`

	// The deliverer's record (zero before its first delivery; NextPosition then is
	// CreatedPosition).
	NextPosition    int64      `db:"next_position"`
	Delivered       int64      `db:"delivered"`
	Retried         int64      `db:"retried"`
	Failed          int64      `db:"failed"`
	LastError       string     `db:"last_error"`
	LastErrorAt     *time.Time `db:"last_error_at"`
	LastDeliveredAt *time.Time `db:"last_delivered_at"`
	// OldestPendingAt is when the record at NextPosition was recorded (nil: none yet).
	OldestPendingAt *time.Time `db:"oldest_pending_at"`
}

// WebhookFilter selects endpoints.
type WebhookFilter struct {
	// OrgID lists one organization's endpoints; empty: every organization's.
	OrgID   string
	Deleted bool
	After   string
	Limit   int
}

const webhookColumns = `SELECT w.endpoint_id::text AS endpoint_id, w.org_id::text AS org_id, w.name, w.url, w.types, w.secret,
	COALESCE(w.previous_secret, '') AS previous_secret, w.rotated_at, w.created_by, w.created_at, w.updated_at, w.deleted_at, w.version,
	w.position, w.created_position, COALESCE(c.position, w.created_position) AS next_position, COALESCE(c.delivered, 0) AS delivered,
	COALESCE(c.retried, 0) AS retried, COALESCE(c.failed, 0) AS failed, COALESCE(c.last_error, '') AS last_error, c.last_error_at,
	c.last_delivered_at, (SELECT e.recorded_at FROM events e WHERE e.global_position = COALESCE(c.position, w.created_position)) AS oldest_pending_at
	FROM webhooks w LEFT JOIN webhook_cursors c ON c.endpoint_id = w.endpoint_id`

// ListWebhooks lists endpoints by id.
func (q *Queries) ListWebhooks(ctx context.Context, f WebhookFilter) ([]Webhook, error) {
	const op = "list webhooks"
	if err := checkLimit(op, f.Limit); err != nil {
		return nil, err
	}
	var w where
	if f.OrgID != "" {
		if err := checkID(op, "org", f.OrgID); err != nil {
			return nil, err
		}
		w.add("w.org_id = ?::uuid", f.OrgID)
	}
	if !f.Deleted {
		w.add("w.deleted_at IS NULL")
	}
	if f.After != "" {
		if err := checkID(op, "cursor", f.After); err != nil {
			return nil, err
		}
		w.add("w.endpoint_id > ?::uuid", f.After)
	}
	return selectRows[Webhook](ctx, q, op, webhookColumns+w.sql()+" ORDER BY w.endpoint_id"+w.limit(f.Limit), w.args...)
}

// GetWebhook is one endpoint, deleted or not.
func (q *Queries) GetWebhook(ctx context.Context, id string) (Webhook, error) {
	const op = "get webhook"
	if !domain.ValidID(id) {
		return Webhook{}, fmt.Errorf("webhook %q: %w", id, domain.ErrNotFound)
	}
	return selectOne[Webhook](ctx, q, op, "webhook "+id, webhookColumns+" WHERE w.endpoint_id = $1::uuid", id)
}

package webhooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

// Endpoint is what a deliverer sends to: the endpoint as the log holds it, its secrets opened
// (Keys[0] the current one; a second one while a rotated-out secret still signs).
type Endpoint struct {
	ID, OrgID, URL string
	Types          []string
	Keys           [][]byte
	// Start is the log position deliveries start from when the endpoint has no cursor yet (that
	// of its creation: what happened before is not sent).
	Start uint64
}

// Config describes one endpoint's deliverer.
type Config struct {
	Endpoint Endpoint
	// Store is the log; Pool holds the cursor (table webhook_cursors).
	Store *eventstore.Store
	Pool  *pgxpool.Pool
	// Client sends the requests (NewClient refuses internal addresses); its Timeout bounds a try.
	Client *http.Client
	// BatchSize is the most records read at once (default 500).
	BatchSize int
	// MinBackoff and MaxBackoff bound the wait between failed tries of a message, doubled each
	// time, with jitter (defaults 500ms and 5m).
	MinBackoff, MaxBackoff time.Duration
	Now                    func() time.Time
	Logger                 *slog.Logger
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Endpoint.ID == "" || c.Endpoint.URL == "" || len(c.Endpoint.Keys) == 0 {
		errs = append(errs, errors.New("webhooks: an endpoint id, URL and key are required"))
	}
	if c.Store == nil || c.Pool == nil || c.Client == nil {
		errs = append(errs, errors.New("webhooks: a store, a pool and a client are required"))
	}
	if c.BatchSize < 0 || c.MinBackoff < 0 || c.MaxBackoff < 0 || (c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff) {
		errs = append(errs, errors.New("webhooks: batch size and backoffs must not be negative, and the minimum backoff not above the maximum"))
	}
	return errors.Join(errs...)
}

// Status is what an endpoint's deliverer has done (also recorded in webhook_cursors).
type Status struct {
	Position  uint64 // the next log position to look at
	Delivered uint64
	Retried   uint64
	Failed    uint64
	LastError string
}

// Deliverer delivers one endpoint's notifications at least once, in log order.
type Deliverer struct {
	cfg  Config
	host string // the endpoint's host, what errors and logs name
	lc   lifecycle.Lifecycle

	mu     sync.Mutex
	status Status
}

// NewDeliverer checks cfg and fills in the defaults.
func NewDeliverer(cfg Config) (*Deliverer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 500
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Logger = cfg.Logger.With("component", "webhooks", "endpoint_id", cfg.Endpoint.ID)
	return &Deliverer{cfg: cfg, host: domain.WebhookHost(cfg.Endpoint.URL)}, nil
}

// Start loads the cursor and starts delivering.
func (d *Deliverer) Start(ctx context.Context) error {
	return d.lc.Start(ctx, "webhook deliverer "+d.cfg.Endpoint.ID, func(context.Context) error {
		pos, err := d.loadCursor(ctx)
		if err != nil {
			return err
		}
		d.mu.Lock()
		d.status.Position = pos
		d.mu.Unlock()
		d.lc.Go(func(ctx context.Context) { d.run(ctx, pos) })
		return nil
	})
}

// Stop stops delivering and waits; a message delivered but not yet recorded goes again at the
// next start, under the same webhook-id.
func (d *Deliverer) Stop() { d.lc.Stop() }

// Status is a snapshot of what the deliverer has done since it started.
func (d *Deliverer) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status
}

func (d *Deliverer) loadCursor(ctx context.Context) (uint64, error) {
	var p int64
	err := d.cfg.Pool.QueryRow(ctx, `SELECT position FROM webhook_cursors WHERE endpoint_id = $1::uuid`, d.cfg.Endpoint.ID).Scan(&p)
	if errors.Is(err, pgx.ErrNoRows) {
		return d.cfg.Endpoint.Start, nil
	}
	if err != nil {
		return 0, fmt.Errorf("webhook %s: load cursor: %w", d.cfg.Endpoint.ID, err)
	}
	return uint64(p), nil
}

// save records that every matching record before pos was delivered; delivered and retried count
// the message just delivered (0 when the cursor only moves past records that do not match).
func (d *Deliverer) save(ctx context.Context, pos uint64, delivered, retried int) error {
	_, err := d.cfg.Pool.Exec(ctx, `INSERT INTO webhook_cursors (endpoint_id, position, delivered, retried, last_delivered_at)
		VALUES ($1::uuid, $2, $3::bigint, $4::bigint, CASE WHEN $3::bigint > 0 THEN now() END)
		ON CONFLICT (endpoint_id) DO UPDATE SET position = excluded.position, delivered = webhook_cursors.delivered + excluded.delivered,
			retried = webhook_cursors.retried + excluded.retried,
			last_delivered_at = COALESCE(excluded.last_delivered_at, webhook_cursors.last_delivered_at), updated_at = now()`,
		d.cfg.Endpoint.ID, int64(pos), int64(delivered), int64(retried))
	if err != nil {
		return fmt.Errorf("webhook %s: save cursor: %w", d.cfg.Endpoint.ID, err)
	}
	d.mu.Lock()
	d.status.Position = pos
	d.status.Delivered += uint64(delivered)
	d.status.Retried += uint64(retried)
	d.mu.Unlock()
	return nil
}

// saveFailure records a failed try beside the cursor. Best effort: the database may be what
// failed, and the try is repeated anyway.
func (d *Deliverer) saveFailure(ctx context.Context, pos uint64, msg string) {
	_, err := d.cfg.Pool.Exec(ctx, `INSERT INTO webhook_cursors (endpoint_id, position, failed, last_error, last_error_at)
		VALUES ($1::uuid, $2, 1, $3, now())
		ON CONFLICT (endpoint_id) DO UPDATE SET failed = webhook_cursors.failed + 1, last_error = excluded.last_error,
			last_error_at = excluded.last_error_at`, d.cfg.Endpoint.ID, int64(pos), msg)
	if err != nil && ctx.Err() == nil {
		d.cfg.Logger.Warn("webhooks: could not record a failure beside the cursor", "error", err)
	}
}

// wait sleeps the backoff after the tries-th failure (1-based), with jitter over its upper half
// so that endpoints that failed together do not retry together; false when ctx ended.
func (d *Deliverer) wait(ctx context.Context, tries int) bool {
	w := d.cfg.MinBackoff
	for i := 1; i < tries && w < d.cfg.MaxBackoff; i++ {
		w *= 2
	}
	w = min(w, d.cfg.MaxBackoff)
	return lifecycle.Sleep(ctx, w/2+rand.N(w/2+1))
}

func (d *Deliverer) run(ctx context.Context, pos uint64) {
	for ctx.Err() == nil {
		recs, err := d.cfg.Store.ReadAll(ctx, pos, d.cfg.BatchSize)
		if err != nil {
			if ctx.Err() == nil {
				d.cfg.Logger.Warn("webhooks: reading the log failed; retrying", "position", pos, "error", err)
				if !d.wait(ctx, 3) {
					return
				}
			}
			continue
		}
		if len(recs) == 0 {
			if err := d.cfg.Store.WaitForPosition(ctx, pos); err != nil {
				return
			}
			continue
		}
		moved := false
		for i := range recs {
			rec := &recs[i]
			if !Matches(d.cfg.Endpoint.OrgID, d.cfg.Endpoint.Types, rec) {
				pos, moved = rec.Position+1, true
				continue
			}
			if moved {
				// Past what does not match, recorded before a delivery that may take a while.
				if !d.saveRetrying(ctx, pos, 0, 0) {
					return
				}
				moved = false
			}
			tries, ok := d.deliver(ctx, rec)
			if !ok {
				return
			}
			pos = rec.Position + 1
			retried := 0
			if tries > 1 {
				retried = 1
			}
			// Recorded after the receiver's 2xx: a crash between repeats the message, never skips it.
			if !d.saveRetrying(ctx, pos, 1, retried) {
				return
			}
		}
		if moved && !d.saveRetrying(ctx, pos, 0, 0) {
			return
		}
	}
}

// saveRetrying records the cursor until it is stored; false when ctx ended.
func (d *Deliverer) saveRetrying(ctx context.Context, pos uint64, delivered, retried int) bool {
	for tries := 1; ; tries++ {
		err := d.save(ctx, pos, delivered, retried)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		d.cfg.Logger.Warn("webhooks: recording the cursor failed; retrying", "position", pos, "error", err)
		if !d.wait(ctx, tries) {
			return false
		}
	}
}

// deliver sends rec until the receiver answers 2xx; it returns how many tries it took, false
// when ctx ended first. A record that cannot be made a message is retried too (never skipped).
func (d *Deliverer) deliver(ctx context.Context, rec *eventstore.Record) (int, bool) {
	id := MessageID(d.cfg.Endpoint.ID, rec.EventID)
	for tries := 1; ; tries++ {
		err := d.try(ctx, id, rec)
		if err == nil {
			return tries, true
		}
		if ctx.Err() != nil {
			return tries, false
		}
		msg := err.Error()
		d.mu.Lock()
		d.status.Failed++
		d.status.LastError = msg
		d.mu.Unlock()
		d.saveFailure(ctx, rec.Position, msg)
		d.cfg.Logger.Warn("webhooks: delivery failed; retrying", "position", rec.Position, "type", rec.Type, "webhook_id", id, "tries", tries, "error", msg)
		if !d.wait(ctx, tries) {
			return tries, false
		}
	}
}

// ErrNot2xx: the receiver answered, but not 2xx.
var ErrNot2xx = errors.New("webhooks: the receiver did not answer 2xx")

// try sends one message once; nil only on a 2xx. Redirects are not followed (a 3xx is a failure:
// a redirect could lead anywhere).
func (d *Deliverer) try(ctx context.Context, id string, rec *eventstore.Record) error {
	body, err := Body(rec)
	if err != nil {
		return fmt.Errorf("make the message of record %d: %w", rec.Position, err)
	}
	now := d.cfg.Now().Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.cfg.Endpoint.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhooks: request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tunnelplane-webhooks/1")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(now, 10))
	req.Header.Set("webhook-signature", Sign(d.cfg.Endpoint.Keys, id, now, body))
	resp, err := d.cfg.Client.Do(req)
	if err != nil {
		// Without the URL: its path or query may be a credential of the receiver's (as in chat
		// webhooks), and this error is logged and shown.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("webhooks: post to %s: %w", d.host, err)
	}
	// A little of the body is read so the connection can be reused; the receiver's words are
	// not kept (they are its own, and unbounded).
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		// The status code only: the reason phrase is the receiver's text.
		return fmt.Errorf("%w: %d %s", ErrNot2xx, resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	return nil
}

package controlapp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
	"github.com/tunnelplane/tunnelplane/webhooks"
)

// webhooksLockKey is the advisory lock of the instance delivering webhooks (one per database, so
// no endpoint's cursor is raced).
const webhooksLockKey = 0x7470_5748_4f4f // "tpWHOO"

// WebhooksConfig configures the endpoints' runner.
type WebhooksConfig struct {
	Store     *eventstore.Store
	Pool      *pgxpool.Pool
	Endpoints interface {
		ListWebhooks(ctx context.Context, f readmodels.WebhookFilter) ([]readmodels.Webhook, error)
	}
	// Secrets opens the endpoints' sealed secrets (a *siem.Secrets).
	Secrets interface {
		Open(field, value string) ([]byte, error)
	}
	// AllowPrivate lets deliveries reach loopback, private and link-local addresses (the
	// operator's --webhook-allow-private; tests).
	AllowPrivate bool
	// Timeout bounds one delivery try (default 10s).
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound retries (webhooks.Config's defaults when zero).
	MinBackoff, MaxBackoff time.Duration
	// Poll is how often the endpoints are read again (default 1s).
	Poll   time.Duration
	Now    func() time.Time
	Logger *slog.Logger
}

// Webhooks runs a deliverer for each webhook endpoint the log holds, in one control plane
// instance at a time (an advisory lock): started, restarted on a change (URL, types, secrets) and
// stopped as the webhooks view changes. Each deliverer has its own goroutine and cursor, so an
// endpoint that is down delays only itself.
type Webhooks struct {
	cfg  WebhooksConfig
	life lifecycle.Lifecycle
	lock advisoryLock

	client  *http.Client
	running map[string]*runningWebhook
	failed  map[string]string // why an endpoint could not start (logged once per reason)
}

type runningWebhook struct {
	d   *webhooks.Deliverer
	key string // what it was built from: a change restarts it
}

// NewWebhooks checks cfg.
func NewWebhooks(cfg WebhooksConfig) (*Webhooks, error) {
	if cfg.Store == nil || cfg.Pool == nil || cfg.Endpoints == nil || cfg.Secrets == nil {
		return nil, errors.New("webhooks: a store, a pool, the webhooks view and a secrets key are required")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Logger = cfg.Logger.With("component", "webhooks")
	return &Webhooks{cfg: cfg, running: map[string]*runningWebhook{}, failed: map[string]string{},
		client: webhooks.NewClient(cfg.Timeout, cfg.AllowPrivate),
		lock:   advisoryLock{pool: cfg.Pool, key: webhooksLockKey, what: "webhooks", log: cfg.Logger}}, nil
}

// Start runs the deliverers until Stop.
func (w *Webhooks) Start(ctx context.Context) error {
	return w.life.Start(ctx, "webhooks", func(context.Context) error {
		w.life.Go(w.run)
		return nil
	})
}

// Stop stops every deliverer and lets go of the lock. Safe to call twice.
func (w *Webhooks) Stop() { w.life.Stop() }

func (w *Webhooks) run(ctx context.Context) {
	defer func() {
		w.stopAll()
		w.lock.release()
	}()
	defer w.client.CloseIdleConnections()
	for {
		if w.lock.hold(ctx, w.stopAll) {
			w.sync(ctx)
		}
		if !lifecycle.Sleep(ctx, w.cfg.Poll) {
			return
		}
	}
}

func (w *Webhooks) stopAll() {
	for id, r := range w.running {
		r.d.Stop()
		delete(w.running, id)
	}
}

// sync makes the running deliverers those of the webhooks view.
func (w *Webhooks) sync(ctx context.Context) {
	eps, err := w.cfg.Endpoints.ListWebhooks(ctx, readmodels.WebhookFilter{Limit: 10000})
	if err != nil {
		if ctx.Err() == nil {
			w.cfg.Logger.Warn("webhooks: cannot read the endpoints", "error", err)
		}
		return
	}
	seen := make(map[string]bool, len(eps))
	for _, ep := range eps {
		seen[ep.ID] = true
		overlap := ep.PreviousSecret != "" && ep.RotatedAt != nil && w.cfg.Now().Before(ep.RotatedAt.Add(domain.WebhookRotationOverlap))
		key := fmt.Sprint(ep.URL, ep.Types, ep.Secret, overlap)
		r := w.running[ep.ID]
		if r != nil && r.key == key {
			continue
		}
		if r != nil {
			r.d.Stop()
			delete(w.running, ep.ID)
		}
		d, err := w.start(ctx, ep, overlap)
		if err != nil {
			if w.failed[ep.ID] != err.Error() && ctx.Err() == nil {
				w.cfg.Logger.Error("webhooks: endpoint cannot start; retrying", "endpoint_id", ep.ID, "error", err)
			}
			w.failed[ep.ID] = err.Error()
			continue
		}
		delete(w.failed, ep.ID)
		w.running[ep.ID] = &runningWebhook{d: d, key: key}
	}
	for id, r := range w.running {
		if !seen[id] {
			r.d.Stop()
			delete(w.running, id)
			w.cfg.Logger.Info("webhooks: endpoint deleted; stopped", "endpoint_id", id)
		}
	}
	for id := range w.failed {
		if !seen[id] {
			delete(w.failed, id)
		}
	}
}

func (w *Webhooks) start(ctx context.Context, ep readmodels.Webhook, overlap bool) (*webhooks.Deliverer, error) {
	secrets := []string{ep.Secret}
	if overlap {
		secrets = append(secrets, ep.PreviousSecret)
	}
	var keys [][]byte
	for _, s := range secrets {
		plain, err := w.cfg.Secrets.Open(webhooks.SealField, s)
		if err != nil {
			return nil, err
		}
		k, err := webhooks.SecretKey(string(plain))
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	d, err := webhooks.NewDeliverer(webhooks.Config{
		Endpoint: webhooks.Endpoint{ID: ep.ID, OrgID: ep.OrgID, URL: ep.URL, Types: slices.Clone(ep.Types), Keys: keys, Start: uint64(ep.CreatedPosition)},
		Store:    w.cfg.Store, Pool: w.cfg.Pool, Client: w.client, MinBackoff: w.cfg.MinBackoff, MaxBackoff: w.cfg.MaxBackoff,
		Now: w.cfg.Now, Logger: w.cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	if err := d.Start(ctx); err != nil {
		return nil, err
	}
	w.cfg.Logger.Info("webhooks: delivering", "endpoint_id", ep.ID, "org_id", ep.OrgID, "host", domain.WebhookHost(ep.URL))
	return d, nil
}

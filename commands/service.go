package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// Sentinel errors of the write side (besides domain's). Match with errors.Is.
var (
	// ErrForbidden: the actor may not do this.
	ErrForbidden = errors.New("forbidden")
	// ErrUnauthenticated: no actor.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrIdempotencyMismatch: an Idempotency-Key was reused for a different request.
	ErrIdempotencyMismatch = errors.New("idempotency key reused with a different request")
	// ErrNoTokenKey: the control plane holds no token signing key.
	ErrNoTokenKey = errors.New("no token signing key")
)

// Result is what a command returns.
type Result struct {
	// ID of the aggregate created or changed.
	ID string `json:"id,omitempty"`
	// Position is the last global position written; pass it as wait_for to read your write.
	Position uint64 `json:"position"`
	// Version is the aggregate's stream version after the command (for If-Match).
	Version uint64 `json:"version,omitempty"`
	// Token is an issued agent token. It is shown once and never stored.
	Token     string     `json:"token,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	IssuedAt  *time.Time `json:"issued_at,omitempty"`
	KeyID     string     `json:"key_id,omitempty"`
	// Secret is an issued tunnel access key or node enrollment token. It is shown once and never
	// stored.
	Secret string `json:"secret,omitempty"`
	// Noop says the command changed nothing (the state already was as asked).
	Noop bool `json:"noop,omitempty"`
}

// Permission is what a command needs: an action on an object in an organization (PlatformOrg for
// platform-wide objects).
type Permission struct {
	Org, Object, Action string
}

// Command is implemented by every command struct.
type Command interface {
	CommandName() string
	Permission() Permission
}

// Handler handles one command type.
type Handler[C Command] interface {
	Handle(ctx context.Context, cmd C) (Result, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc[C Command] func(ctx context.Context, cmd C) (Result, error)

// Handle implements Handler.
func (f HandlerFunc[C]) Handle(ctx context.Context, cmd C) (Result, error) { return f(ctx, cmd) }

// Config wires the write side.
type Config struct {
	Store *eventstore.Store
	// Pool reads the RBAC view and keeps idempotency records (usually Store.Pool()).
	Pool *pgxpool.Pool
	// LogKeys and TokenKeys hold the control plane's private keys (rotation writes new ones).
	LogKeys, TokenKeys eventstore.KeyStore
	// TokenIssuer is the iss of minted tokens. Default token.DefaultIssuer.
	TokenIssuer string
	// RBACPosition reports the last position applied by the role_assignments projection, and
	// WaitRBAC waits for it to reach a position; both optional (policy is then reloaded on every
	// denial).
	RBACPosition func() int64
	WaitRBAC     func(ctx context.Context, pos uint64) error
	// MaxConflictRetries bounds reload-decide-append retries on a concurrent change when the
	// caller did not pin a version. Default 3.
	MaxConflictRetries int
	// CacheStreams bounds how many aggregates' events are kept to decide without a read.
	// Default 10000; -1 disables the cache.
	CacheStreams int
	// AuditFlushInterval is how often aggregated audit events (denials, failed logins) are
	// written. Default 10s.
	AuditFlushInterval time.Duration
	// Subjects destroys subjects' data keys (EraseSubject). Optional: without it erasure fails
	// with ErrNoEraser.
	Subjects Eraser
	// Sealing hands out subjects' sealing keys, put into agent tokens' issue records so that nodes
	// seal the agents' addresses (*pii.Keyring). Optional: without it tokens carry none, and nodes
	// leave those addresses out.
	Sealing SealingKeys
	Now     func() time.Time
	Logger  *slog.Logger
}

// Validate reports every problem.
func (c Config) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("commands config: Store is required"))
	}
	if c.Pool == nil {
		errs = append(errs, errors.New("commands config: Pool is required"))
	}
	if c.MaxConflictRetries < 0 {
		errs = append(errs, errors.New("commands config: MaxConflictRetries is negative"))
	}
	if c.AuditFlushInterval < 0 {
		errs = append(errs, errors.New("commands config: AuditFlushInterval is negative"))
	}
	return errors.Join(errs...)
}

// Service holds the decorated handlers of every command.
type Service struct {
	cfg     Config
	store   *eventstore.Store
	log     *slog.Logger
	authz   *Authorizer
	Auditor *Auditor

	tokenMu  sync.RWMutex
	tokenKey *eventstore.SigningKey

	cache *streamCache

	// owner names this process in the idempotency claims it holds.
	owner string
	// crashHook, when set (only by tests), is asked at each stage of an idempotent command
	// ("claimed", "handled") whether to stop there as a crashed process would.
	crashHook func(stage string) bool

	Handlers Handlers
}

// Handlers are the decorated command handlers (authorization, idempotency, logging).
type Handlers struct {
	CreateOrganization  Handler[CreateOrganization]
	CreateTunnel        Handler[CreateTunnel]
	UpdateTunnel        Handler[UpdateTunnel]
	DeleteTunnel        Handler[DeleteTunnel]
	SetTunnelAccessLog  Handler[SetTunnelAccessLog]
	EnrollNode          Handler[EnrollNode]
	DrainNode           Handler[DrainNode]
	RemoveNode          Handler[RemoveNode]
	IssueAgentToken     Handler[IssueAgentToken]
	RevokeAgentToken    Handler[RevokeAgentToken]
	IssueAccessKey      Handler[IssueAccessKey]
	RevokeAccessKey     Handler[RevokeAccessKey]
	RotateSigningKey    Handler[RotateSigningKey]
	AssignRole          Handler[AssignRole]
	UnassignRole        Handler[UnassignRole]
	ConfigureSIEMSink   Handler[ConfigureSIEMSink]
	UpdateSIEMSink      Handler[UpdateSIEMSink]
	RemoveSIEMSink      Handler[RemoveSIEMSink]
	SkipSIEMDelivery    Handler[SkipSIEMDelivery]
	CreateWebhook       Handler[CreateWebhook]
	UpdateWebhook       Handler[UpdateWebhook]
	RotateWebhookSecret Handler[RotateWebhookSecret]
	DeleteWebhook       Handler[DeleteWebhook]
	SetAccessPolicy     Handler[SetAccessPolicy]
	CreateGrant         Handler[CreateGrant]
	RevokeGrant         Handler[RevokeGrant]
	RequestAccess       Handler[RequestAccess]
	ApproveAccess       Handler[ApproveAccess]
	DenyAccess          Handler[DenyAccess]

	IssueEnrollmentToken  Handler[IssueEnrollmentToken]
	RevokeEnrollmentToken Handler[RevokeEnrollmentToken]
	// EnrollNodeWithToken is authorized by the enrollment token it carries, not by the policy.
	EnrollNodeWithToken Handler[EnrollNodeWithToken]
	SetOrgTimeZone      Handler[SetOrgTimeZone]
	SetPriceSheet       Handler[SetPriceSheet]
	EraseSubject        Handler[EraseSubject]
	DeleteUser          Handler[DeleteUser]

	CreateReportSchedule Handler[CreateReportSchedule]
	UpdateReportSchedule Handler[UpdateReportSchedule]
	PauseReportSchedule  Handler[PauseReportSchedule]
	ResumeReportSchedule Handler[ResumeReportSchedule]
	DeleteReportSchedule Handler[DeleteReportSchedule]
}

// New builds the write side. Call Start to run the audit flusher and Stop at the end.
func New(cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxConflictRetries == 0 {
		cfg.MaxConflictRetries = 3
	}
	if cfg.AuditFlushInterval == 0 {
		cfg.AuditFlushInterval = 10 * time.Second
	}
	if cfg.CacheStreams == 0 {
		cfg.CacheStreams = 10_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.TokenIssuer == "" {
		cfg.TokenIssuer = "tunnelplane"
	}
	s := &Service{cfg: cfg, store: cfg.Store, log: cfg.Logger, cache: newStreamCache(cfg.CacheStreams), owner: uuid.NewString()}
	s.Auditor = newAuditor(s)
	s.authz = newAuthorizer(cfg.Pool, cfg.RBACPosition, cfg.WaitRBAC, cfg.Store, s.Auditor, cfg.Logger)
	s.Handlers = Handlers{
		CreateOrganization:  decorate(s, HandlerFunc[CreateOrganization](s.createOrganization)),
		CreateTunnel:        decorate(s, HandlerFunc[CreateTunnel](s.createTunnel)),
		UpdateTunnel:        decorate(s, HandlerFunc[UpdateTunnel](s.updateTunnel)),
		DeleteTunnel:        decorate(s, HandlerFunc[DeleteTunnel](s.deleteTunnel)),
		SetTunnelAccessLog:  decorate(s, HandlerFunc[SetTunnelAccessLog](s.setTunnelAccessLog)),
		EnrollNode:          decorate(s, HandlerFunc[EnrollNode](s.enrollNode)),
		DrainNode:           decorate(s, HandlerFunc[DrainNode](s.drainNode)),
		RemoveNode:          decorate(s, HandlerFunc[RemoveNode](s.removeNode)),
		IssueAgentToken:     decorate(s, HandlerFunc[IssueAgentToken](s.issueAgentToken)),
		RevokeAgentToken:    decorate(s, HandlerFunc[RevokeAgentToken](s.revokeAgentToken)),
		IssueAccessKey:      decorate(s, HandlerFunc[IssueAccessKey](s.issueAccessKey)),
		RevokeAccessKey:     decorate(s, HandlerFunc[RevokeAccessKey](s.revokeAccessKey)),
		RotateSigningKey:    decorate(s, HandlerFunc[RotateSigningKey](s.rotateSigningKey)),
		AssignRole:          decorate(s, HandlerFunc[AssignRole](s.assignRole)),
		UnassignRole:        decorate(s, HandlerFunc[UnassignRole](s.unassignRole)),
		ConfigureSIEMSink:   decorate(s, HandlerFunc[ConfigureSIEMSink](s.configureSIEMSink)),
		UpdateSIEMSink:      decorate(s, HandlerFunc[UpdateSIEMSink](s.updateSIEMSink)),
		RemoveSIEMSink:      decorate(s, HandlerFunc[RemoveSIEMSink](s.removeSIEMSink)),
		SkipSIEMDelivery:    decorate(s, HandlerFunc[SkipSIEMDelivery](s.skipSIEMDelivery)),
		CreateWebhook:       decorate(s, HandlerFunc[CreateWebhook](s.createWebhook)),
		UpdateWebhook:       decorate(s, HandlerFunc[UpdateWebhook](s.updateWebhook)),
		RotateWebhookSecret: decorate(s, HandlerFunc[RotateWebhookSecret](s.rotateWebhookSecret)),
		DeleteWebhook:       decorate(s, HandlerFunc[DeleteWebhook](s.deleteWebhook)),
		SetAccessPolicy:     decorate(s, HandlerFunc[SetAccessPolicy](s.setAccessPolicy)),
		CreateGrant:         decorate(s, HandlerFunc[CreateGrant](s.createGrant)),
		RevokeGrant:         decorate(s, HandlerFunc[RevokeGrant](s.revokeGrant)),
		RequestAccess:       decorate(s, HandlerFunc[RequestAccess](s.requestAccess)),
		ApproveAccess:       decorate(s, HandlerFunc[ApproveAccess](s.approveAccess)),
		DenyAccess:          decorate(s, HandlerFunc[DenyAccess](s.denyAccess)),

		IssueEnrollmentToken:  decorate(s, HandlerFunc[IssueEnrollmentToken](s.issueEnrollmentToken)),
		RevokeEnrollmentToken: decorate(s, HandlerFunc[RevokeEnrollmentToken](s.revokeEnrollmentToken)),
		EnrollNodeWithToken:   tokenAuthenticated(s, HandlerFunc[EnrollNodeWithToken](s.enrollNodeWithToken)),
		SetOrgTimeZone:        decorate(s, HandlerFunc[SetOrgTimeZone](s.setOrgTimeZone)),
		SetPriceSheet:         decorate(s, HandlerFunc[SetPriceSheet](s.setPriceSheet)),
		EraseSubject:          decorate(s, HandlerFunc[EraseSubject](s.eraseSubject)),
		DeleteUser:            decorate(s, HandlerFunc[DeleteUser](s.deleteUser)),

		CreateReportSchedule: decorate(s, HandlerFunc[CreateReportSchedule](s.createReportSchedule)),
		UpdateReportSchedule: decorate(s, HandlerFunc[UpdateReportSchedule](s.updateReportSchedule)),
		PauseReportSchedule:  decorate(s, HandlerFunc[PauseReportSchedule](s.pauseReportSchedule)),
		ResumeReportSchedule: decorate(s, HandlerFunc[ResumeReportSchedule](s.resumeReportSchedule)),
		DeleteReportSchedule: decorate(s, HandlerFunc[DeleteReportSchedule](s.deleteReportSchedule)),
	}
	return s, nil
}

// Authorizer returns the policy enforcer (the API uses it for reads).
func (s *Service) Authorizer() *Authorizer { return s.authz }

// Start runs the audit flusher until Stop.
func (s *Service) Start(ctx context.Context) { s.Auditor.start(ctx, s.cfg.AuditFlushInterval) }

// Stop flushes pending audit events and ends the flusher. Safe to call twice.
func (s *Service) Stop() { s.Auditor.stop() }

// decorate wraps a core handler: logging ∘ authorization ∘ idempotency ∘ core.
func decorate[C Command](s *Service, core Handler[C]) Handler[C] {
	return logged[C](s, authorized[C](s, idempotent[C](s, core)))
}

func logged[C Command](s *Service, next Handler[C]) Handler[C] {
	return HandlerFunc[C](func(ctx context.Context, cmd C) (Result, error) {
		start := time.Now()
		res, err := next.Handle(ctx, cmd)
		a := ActorFrom(ctx)
		attrs := []any{"command", cmd.CommandName(), "actor", a.ID, "correlation_id", a.CorrelationID, "request_id", a.RequestID,
			"duration_ms", time.Since(start).Milliseconds()}
		if err != nil {
			s.log.Info("command refused", append(attrs, "error", err)...)
		} else {
			s.log.Debug("command done", append(attrs, "position", res.Position, "id", res.ID)...)
		}
		return res, err
	})
}

// metadata builds the event metadata of a command.
func metadata(ctx context.Context, command, org string, now time.Time) []byte {
	a := ActorFrom(ctx)
	m := domain.Metadata{Actor: a.ID, OrgID: org, CorrelationID: a.CorrelationID, CausationID: a.CausationID, RequestID: a.RequestID,
		ClientIP: a.ClientIP, UserAgent: a.UserAgent, Command: command, OccurredAt: now.UTC()}
	if m.CorrelationID == "" {
		m.CorrelationID = uuid.Must(uuid.NewV7()).String()
	}
	b, _ := json.Marshal(m)
	return b
}

// events turns domain events into event data with ids from g and shared metadata.
func events(g *idGen, meta []byte, evs ...domain.Event) ([]eventstore.EventData, error) {
	out := make([]eventstore.EventData, len(evs))
	for i, e := range evs {
		b, err := json.Marshal(e)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", e.EventType(), err)
		}
		out[i] = eventstore.EventData{ID: g.next(), Type: e.EventType(), Payload: b, Metadata: meta}
	}
	return out, nil
}

// load returns a stream as domain records, from the cache when it holds the stream.
func (s *Service) load(ctx context.Context, stream string) ([]domain.Recorded, error) {
	if recs, ok := s.cache.get(stream); ok {
		return recs, nil
	}
	recs, err := s.read(ctx, stream)
	if err != nil {
		return nil, err
	}
	s.cache.put(stream, recs)
	return recs, nil
}

// read reads a stream from the store.
func (s *Service) read(ctx context.Context, stream string) ([]domain.Recorded, error) {
	var out []domain.Recorded
	from := uint64(1)
	for {
		recs, err := s.store.ReadStream(ctx, stream, from, 1000)
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			out = append(out, domain.Recorded{Type: r.Type, Payload: r.Payload, StreamVersion: r.StreamVersion, RecordedAt: r.RecordedAt})
		}
		if len(recs) < 1000 {
			return out, nil
		}
		from = recs[len(recs)-1].StreamVersion + 1
	}
}

// retryConflicts reruns fn when a concurrent change beat it, unless the caller pinned a version.
func (s *Service) retryConflicts(ctx context.Context, pinned bool, fn func() (Result, error)) (Result, error) {
	for attempt := 0; ; attempt++ {
		res, err := fn()
		s.forgetStale(err)
		if err == nil || pinned || attempt >= s.cfg.MaxConflictRetries || !errors.Is(err, eventstore.ErrWrongExpectedVersion) {
			return res, conflict(err)
		}
		if ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
	}
}

// conflict maps the store's concurrency error onto the domain's conflict.
func conflict(err error) error {
	if errors.Is(err, eventstore.ErrWrongExpectedVersion) {
		return fmt.Errorf("%w: %w", domain.ErrConflict, err)
	}
	return err
}

package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/webhooks"
)

// NotificationLimits bounds the notifications feed (GET /api/v1/notifications/stream).
type NotificationLimits struct {
	// PerUser is how many feeds one user may hold open at once (429 beyond). Default 4.
	PerUser int
	// Total is how many feeds this process holds open at once (429 beyond). Default 1000.
	Total int
	// Heartbeat is how often an idle feed sends a comment (keeping proxies from closing it).
	// Default 15s.
	Heartbeat time.Duration
	// WriteTimeout is how long one write to the caller may take: a reader slower than that is
	// disconnected (it resumes with Last-Event-ID), not buffered for. Default 10s.
	WriteTimeout time.Duration
	// Batch is the most log records read at once: with the writer's buffer, what a feed holds.
	// Default 100.
	Batch int
}

func (l NotificationLimits) validate() error {
	if l.PerUser < 0 || l.Total < 0 || l.Heartbeat < 0 || l.WriteTimeout < 0 || l.Batch < 0 {
		return errors.New("api config: Notifications limits must not be negative")
	}
	return nil
}

func (l NotificationLimits) withDefaults() NotificationLimits {
	if l.PerUser == 0 {
		l.PerUser = 4
	}
	if l.Total == 0 {
		l.Total = 1000
	}
	if l.Heartbeat == 0 {
		l.Heartbeat = 15 * time.Second
	}
	if l.WriteTimeout == 0 {
		l.WriteTimeout = 10 * time.Second
	}
	if l.Batch == 0 {
		l.Batch = 100
	}
	return l
}

// feeds counts the open notification feeds per user.
type feeds struct {
	mu     sync.Mutex
	byUser map[string]int
	total  int
}

// take holds a feed for user; false when a limit is reached.
func (f *feeds) take(user string, l NotificationLimits) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.byUser == nil {
		f.byUser = map[string]int{}
	}
	if f.total >= l.Total || f.byUser[user] >= l.PerUser {
		return false
	}
	f.byUser[user]++
	f.total++
	return true
}

func (f *feeds) release(user string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.total--
	if f.byUser[user]--; f.byUser[user] <= 0 {
		delete(f.byUser, user)
	}
}

// notificationStream is the caller's own notifications as server-sent events: an access request
// they may decide was made; their request was approved or denied; a grant to them was created,
// is about to expire (grant.expiring), expired or was revoked. Each event's id is its log
// position, so Last-Event-ID resumes after it; without one the feed starts at the log's head.
func (s *Server) notificationStream(c echo.Context) error {
	q, err := newQuery(c, "last_event_id")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(c.Request().Context())
	defer cancel()
	defer context.AfterFunc(s.feedsCtx, cancel)() // ends with the server (CloseStreams)
	user := commands.ActorFrom(ctx).ID
	head, err := s.cfg.Log.Head(ctx)
	if err != nil {
		return err
	}
	from := head
	last := c.Request().Header.Get("Last-Event-ID")
	if last == "" {
		last = q.str("last_event_id") // for clients that cannot set headers
	}
	if last != "" {
		id, err := strconv.ParseUint(strings.TrimSpace(last), 10, 64)
		if err != nil || id >= head {
			return badRequest("Last-Event-ID", "must be the id (a log position) of an event this feed sent")
		}
		from = id + 1
	}
	lim := s.cfg.Notifications
	if !s.feeds.take(user, lim) {
		c.Response().Header().Set("Retry-After", "5")
		return echo.NewHTTPError(http.StatusTooManyRequests, fmt.Sprintf("at most %d notification feeds per user (and %d in all) are open at once", lim.PerUser, lim.Total))
	}
	defer s.feeds.release(user)

	w := c.Response()
	h := w.Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w.Writer)
	send := func(b []byte) error {
		if err := rc.SetWriteDeadline(time.Now().Add(lim.WriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		return rc.Flush()
	}
	// A comment first, so the caller sees the feed open.
	if err := send([]byte(": notifications of " + strconv.Quote(user) + "\n\n")); err != nil {
		return nil
	}
	n := newRecipients(s.cfg.Service, user)
	lastSent := time.Now()
	for {
		recs, err := s.cfg.Log.ReadAll(ctx, from, lim.Batch)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("notifications: reading the log failed; ending the feed (the caller resumes)", "error", err)
			}
			return nil
		}
		for i := range recs {
			rec := &recs[i]
			from = rec.Position + 1
			if !n.isFor(ctx, rec) {
				continue
			}
			body, err := webhooks.Body(rec)
			if err != nil {
				continue
			}
			if err := send(fmt.Appendf(nil, "id: %d\nevent: %s\ndata: %s\n\n", rec.Position, rec.Type, body)); err != nil {
				return nil // slow or gone: disconnected, it resumes with Last-Event-ID
			}
			lastSent = time.Now()
		}
		if len(recs) == lim.Batch && time.Since(lastSent) < lim.Heartbeat {
			continue
		}
		if len(recs) == 0 {
			wctx, cancel := context.WithTimeout(ctx, lim.Heartbeat-min(time.Since(lastSent), lim.Heartbeat))
			err := s.cfg.Log.WaitForPosition(wctx, from)
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				continue
			}
		}
		if time.Since(lastSent) >= lim.Heartbeat {
			// The id moves the caller's Last-Event-ID past what was read (no event fires), so a
			// reconnect does not read it again.
			if err := send(fmt.Appendf(nil, ": heartbeat\nid: %d\n\n", from-1)); err != nil {
				return nil
			}
			lastSent = time.Now()
		}
	}
}

// recipients decides which records are one user's notifications. What it looks up (who made a
// request, whom a grant is to) never changes, so it is kept, bounded.
type recipients struct {
	svc  *commands.Service
	user string
	// who maps a request or grant id to its requester or its user subject ("" for a group).
	who map[string]string
}

const maxRecipientCache = 4096

func newRecipients(svc *commands.Service, user string) *recipients {
	return &recipients{svc: svc, user: user, who: map[string]string{}}
}

func (r *recipients) remember(id, user string) {
	if len(r.who) >= maxRecipientCache {
		clear(r.who)
	}
	r.who[id] = user
}

// lookup is who of the tunnel's sharing state id names (find reads it), remembered.
func (r *recipients) lookup(ctx context.Context, org, tunnel, id string, find func(*domain.Sharing) string) string {
	if u, ok := r.who[id]; ok {
		return u
	}
	sh, err := r.svc.Sharing(ctx, org, tunnel)
	if err != nil {
		return "" // a deleted tunnel: nobody is told
	}
	u := find(sh)
	r.remember(id, u)
	return u
}

func (r *recipients) requester(ctx context.Context, org, tunnel, requestID string) string {
	return r.lookup(ctx, org, tunnel, requestID, func(sh *domain.Sharing) string {
		q, _ := sh.Request(requestID)
		return q.Requester
	})
}

func (r *recipients) grantee(ctx context.Context, org, tunnel, grantID string) string {
	return r.lookup(ctx, org, tunnel, grantID, func(sh *domain.Sharing) string {
		g, _ := sh.Grant(grantID)
		if g.SubjectKind != domain.GrantToUser {
			return ""
		}
		return g.Subject
	})
}

// isFor tells whether rec is a notification for the user. Whether they may decide a request is
// asked of their roles and the tunnel's policy now, when the feed reads it.
func (r *recipients) isFor(ctx context.Context, rec *eventstore.Record) bool {
	switch rec.Type {
	case domain.TypeAccessRequested, domain.TypeAccessApproved, domain.TypeAccessRequestDenied,
		domain.TypeGrantCreated, domain.TypeGrantExpiring, domain.TypeGrantExpired, domain.TypeGrantRevoked:
	default:
		return false
	}
	e, err := domain.Decode(rec.Type, rec.Payload)
	if err != nil {
		return false
	}
	switch ev := e.(type) {
	case *domain.AccessRequested:
		r.remember(ev.RequestID, ev.Requester)
		if ev.Requester == r.user {
			return false
		}
		sh, err := r.svc.Sharing(ctx, ev.OrgID, ev.TunnelID)
		return err == nil && r.svc.MayDecideAccess(r.user, ev.OrgID, sh, ev.RequestID)
	case *domain.AccessApproved:
		return r.requester(ctx, ev.OrgID, ev.TunnelID, ev.RequestID) == r.user
	case *domain.AccessRequestDenied:
		return r.requester(ctx, ev.OrgID, ev.TunnelID, ev.RequestID) == r.user
	case *domain.GrantCreated:
		u := ""
		if ev.SubjectKind == domain.GrantToUser {
			u = ev.Subject
		}
		r.remember(ev.GrantID, u)
		return u == r.user
	case *domain.GrantExpiring:
		return ev.SubjectKind == domain.GrantToUser && ev.Subject == r.user
	case *domain.GrantExpired:
		return r.grantee(ctx, ev.OrgID, ev.TunnelID, ev.GrantID) == r.user
	case *domain.GrantRevoked:
		return r.grantee(ctx, ev.OrgID, ev.TunnelID, ev.GrantID) == r.user
	}
	return false
}

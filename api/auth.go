package api

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/browserlogin"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// keyMap is an immutable set of public keys by key id, swapped as a whole on refresh.
type keyMap map[string]crypto.PublicKey

// refreshingKeys is a token.Keys whose contents are reloaded from a source: periodically, and on
// demand when a token names a key id it does not know (at most once per minInterval, so a flood of
// forged key ids cannot turn into a flood of reloads).
type refreshingKeys struct {
	name        string
	load        func(ctx context.Context) (keyMap, error)
	minInterval time.Duration

	keys atomic.Pointer[keyMap]
	mu   sync.Mutex
	last time.Time
}

func newRefreshingKeys(name string, load func(context.Context) (keyMap, error)) *refreshingKeys {
	k := &refreshingKeys{name: name, load: load, minInterval: time.Second}
	empty := keyMap{}
	k.keys.Store(&empty)
	return k
}

// PublicKey implements token.Keys.
func (k *refreshingKeys) PublicKey(kid string) (crypto.PublicKey, bool) {
	m := *k.keys.Load()
	pub, ok := m[kid]
	return pub, ok
}

func (k *refreshingKeys) has(kid string) bool {
	_, ok := k.PublicKey(kid)
	return ok
}

// refresh reloads the keys. On demand (not force) it runs at most once per minInterval; scheduled
// and forced reloads do not count against that, so the first unknown key id after one still
// triggers a reload.
func (k *refreshingKeys) refresh(ctx context.Context, force bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !force {
		if time.Since(k.last) < k.minInterval {
			return nil
		}
		k.last = time.Now()
	}
	m, err := k.load(ctx)
	if err != nil {
		return fmt.Errorf("%s keys: %w", k.name, err)
	}
	k.keys.Store(&m)
	return nil
}

// keyState is one key in the log's history, as this API reports it.
type keyState struct {
	purpose   eventstore.KeyPurpose
	pub       ed25519.PublicKey
	state     string // active, rotated, revoked
	changedAt time.Time
}

// readKeyHistory folds the log's own stream ("$log") into the state of every key. The store's
// Keys() gives positions; this adds the public keys (to verify tokens) and whether a key that is
// no longer in force was rotated or revoked.
func readKeyHistory(ctx context.Context, st KeyHistory) (map[string]*keyState, error) {
	out := map[string]*keyState{}
	from := uint64(1)
	for {
		recs, err := st.ReadStream(ctx, eventstore.LogStream, from, 1000)
		if err != nil {
			return nil, fmt.Errorf("key history: %w", err)
		}
		for _, r := range recs {
			switch r.Type {
			case eventstore.TypeGenesis:
				var p eventstore.GenesisPayload
				if err := json.Unmarshal(r.Payload, &p); err != nil {
					return nil, fmt.Errorf("key history at %d: %w", r.Position, err)
				}
				out[p.KeyID] = &keyState{purpose: eventstore.PurposeLog, pub: p.PublicKey, state: "active", changedAt: r.RecordedAt}
			case eventstore.TypeKeyAdded:
				var p eventstore.KeyAddedPayload
				if err := json.Unmarshal(r.Payload, &p); err != nil {
					return nil, fmt.Errorf("key history at %d: %w", r.Position, err)
				}
				out[p.KeyID] = &keyState{purpose: p.Purpose, pub: p.PublicKey, state: "active", changedAt: r.RecordedAt}
			case eventstore.TypeKeyRotated:
				var p eventstore.KeyRotatedPayload
				if err := json.Unmarshal(r.Payload, &p); err != nil {
					return nil, fmt.Errorf("key history at %d: %w", r.Position, err)
				}
				if old := out[p.OldKeyID]; old != nil {
					old.state, old.changedAt = "rotated", r.RecordedAt
				}
				out[p.NewKeyID] = &keyState{purpose: p.Purpose, pub: p.PublicKey, state: "active", changedAt: r.RecordedAt}
			case eventstore.TypeKeyRevoked:
				var p eventstore.KeyRevokedPayload
				if err := json.Unmarshal(r.Payload, &p); err != nil {
					return nil, fmt.Errorf("key history at %d: %w", r.Position, err)
				}
				if k := out[p.KeyID]; k != nil {
					k.state, k.changedAt = "revoked", r.RecordedAt
				}
			}
		}
		if len(recs) < 1000 {
			return out, nil
		}
		from = recs[len(recs)-1].StreamVersion + 1
	}
}

// authenticator verifies bearer tokens: the control plane's own (EdDSA, token keys from the log)
// and, when configured, an identity provider's (JWKS).
type authenticator struct {
	internal, external      *refreshingKeys
	internalV, externalV    *token.Verifier
	auditor                 *commands.Auditor
	refreshEvery, jwksEvery time.Duration
	jwksFromURL             bool
	log                     *slog.Logger
	now                     func() time.Time

	// verified remembers tokens that passed verification, so a client's every request does not
	// cost a signature check. An entry holds only while its key is still in its key set (a
	// revoked or expired-grace key drops its tokens at the next refresh) and the token has not
	// expired.
	cacheMu  sync.RWMutex
	verified map[string]verifiedToken
}

type verifiedToken struct {
	subject, kid string
	host         string // token.UserClaims.Host
	external     bool
	expires      time.Time
	issued       time.Time // zero when the token has no iat
}

// maxVerifiedTokens bounds the cache; when full it starts over (simple and cheap; tokens are
// few per client).
const maxVerifiedTokens = 10000

func newAuthenticator(s *Server) (*authenticator, error) {
	cfg := s.cfg
	a := &authenticator{auditor: cfg.Service.Auditor, refreshEvery: cfg.KeyRefresh, jwksEvery: cfg.JWKSRefresh, log: s.log, now: cfg.Now}
	a.internal = newRefreshingKeys("token", func(ctx context.Context) (keyMap, error) {
		hist, err := readKeyHistory(ctx, cfg.Log)
		if err != nil {
			return nil, err
		}
		now := cfg.Now()
		m := keyMap{}
		for id, k := range hist {
			if k.purpose != eventstore.PurposeToken {
				continue
			}
			if k.state == "active" || (k.state == "rotated" && now.Before(k.changedAt.Add(cfg.RotatedTokenKeyGrace))) {
				m[id] = k.pub
			}
		}
		return m, nil
	})
	a.internalV = &token.Verifier{Keys: a.internal, Issuer: cfg.TokenIssuer, Leeway: cfg.TokenLeeway, Now: cfg.Now}
	switch {
	case cfg.JWKSFile != "":
		a.external = newRefreshingKeys("jwks", func(context.Context) (keyMap, error) { return loadJWKSFile(cfg.JWKSFile) })
	case cfg.JWKSURL != "":
		a.jwksFromURL = true
		a.external = newRefreshingKeys("jwks", func(ctx context.Context) (keyMap, error) { return fetchJWKS(ctx, cfg.HTTPClient, cfg.JWKSURL) })
	}
	if a.external != nil {
		a.externalV = &token.Verifier{Keys: a.external, Issuer: cfg.JWTIssuer, Leeway: cfg.TokenLeeway, Now: cfg.Now}
	}
	return a, nil
}

// start loads the keys and keeps them fresh until stop. A JWKS file that cannot be read is an
// error (configuration); an unreachable JWKS URL is retried.
// load reads the token keys (and the identity provider's JWKS) before the API serves.
func (a *authenticator) load(ctx context.Context) error {
	if err := a.internal.refresh(ctx, true); err != nil {
		return err
	}
	if a.external != nil {
		if err := a.external.refresh(ctx, true); err != nil {
			if !a.jwksFromURL {
				return err
			}
			a.log.Warn("JWKS not loaded yet; retrying", "error", err)
		}
	}
	return nil
}

// refreshLoop re-reads the token keys every refreshEvery (and a JWKS URL every jwksEvery) until
// ctx ends.
func (a *authenticator) refreshLoop(ctx context.Context) {
	t := time.NewTicker(a.refreshEvery)
	defer t.Stop()
	var jwks <-chan time.Time
	if a.jwksFromURL {
		jt := time.NewTicker(a.jwksEvery)
		defer jt.Stop()
		jwks = jt.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := a.internal.refresh(ctx, true); err != nil && ctx.Err() == nil {
				a.log.Warn("token keys not refreshed", "error", err)
			}
		case <-jwks:
			if err := a.external.refresh(ctx, true); err != nil && ctx.Err() == nil {
				a.log.Warn("JWKS not refreshed", "error", err)
			}
		}
	}
}

// verify checks a raw bearer token and returns its subject and the host it is bound to ("" for
// none).
func (a *authenticator) verify(ctx context.Context, raw string) (subject, host string, issued time.Time, err error) {
	a.cacheMu.RLock()
	v, ok := a.verified[raw]
	a.cacheMu.RUnlock()
	if ok && a.now().Before(v.expires) && ((!v.external && a.internal.has(v.kid)) || (v.external && a.external.has(v.kid))) {
		return v.subject, v.host, v.issued, nil
	}
	kid := peekKID(raw)
	verifier := a.pick(kid)
	if verifier == nil {
		// An unknown key id: maybe a key added or rotated a moment ago (or by another process).
		_ = a.internal.refresh(ctx, false)
		if a.external != nil && a.jwksFromURL {
			_ = a.external.refresh(ctx, false)
		}
		verifier = a.pick(kid)
	}
	if verifier == nil {
		verifier = a.internalV // reports the unknown key
	}
	c, err := verifier.VerifyUser(raw)
	if err != nil {
		return "", "", time.Time{}, err
	}
	if c.IssuedAt != nil {
		issued = c.IssuedAt.Time
	}
	if c.ExpiresAt != nil {
		a.cacheMu.Lock()
		if a.verified == nil || len(a.verified) >= maxVerifiedTokens {
			a.verified = map[string]verifiedToken{}
		}
		a.verified[raw] = verifiedToken{subject: c.Subject, kid: kid, host: c.Host, external: verifier == a.externalV, expires: c.ExpiresAt.Time, issued: issued}
		a.cacheMu.Unlock()
	}
	return c.Subject, c.Host, issued, nil
}

func (a *authenticator) pick(kid string) *token.Verifier {
	if a.internal.has(kid) {
		return a.internalV
	}
	if a.external != nil && a.external.has(kid) {
		return a.externalV
	}
	return nil
}

// peekKID reads the kid header without verifying anything (to choose the key set).
func peekKID(raw string) string {
	t, _, err := jwt.NewParser().ParseUnverified(raw, &jwt.RegisteredClaims{})
	if err != nil || t == nil {
		return ""
	}
	kid, _ := t.Header["kid"].(string)
	return kid
}

// claimedSubject is the unverified sub of a token that failed verification, for login monitoring.
// Anyone can put anything there (NUL included), so it is cut to the audit log's bounds.
func claimedSubject(raw string) string {
	var c jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(raw, &c); err != nil {
		return ""
	}
	return commands.Bounded(c.Subject, commands.MaxNameBytes)
}

// authenticate is the middleware of /api/v1: it verifies the bearer token and puts the actor
// (subject, client address, user agent, request and correlation ids) and the Idempotency-Key into
// the request's context. Failures are audited (aggregated) and answered 401.
func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		// Cut to the audit log's bounds before they enter an actor or an audit event: a 17 KB
		// User-Agent would exceed the store's metadata limit and fail the event (and a command).
		ip, ua := commands.Bounded(c.RealIP(), commands.MaxAddrBytes), commands.Bounded(req.UserAgent(), commands.MaxUserAgentBytes)
		authz := req.Header.Get(echo.HeaderAuthorization)
		scheme, raw, _ := strings.Cut(authz, " ")
		raw = strings.TrimSpace(raw)
		if authz == "" {
			if ck, err := req.Cookie(domain.SessionCookie); err == nil && ck.Value != "" && s.publicOrigin != "" {
				// A browser session on the API's host. A change it makes must come from the
				// API's own pages (CSRF): browsers send Origin on every such request.
				if req.Method != http.MethodGet && req.Method != http.MethodHead && req.Header.Get(echo.HeaderOrigin) != s.publicOrigin {
					s.auth.auditor.AuthFailed("cookie_cross_origin", "", ip, ua)
					return &authError{code: "invalid_request", detail: "a change made with the session cookie must come from the API's own origin (Origin)"}
				}
				authz, scheme, raw = "cookie", "Bearer", ck.Value
			}
		}
		if authz == "" {
			s.auth.auditor.AuthFailed("missing_token", "", ip, ua)
			return &authError{detail: "send Authorization: Bearer <token>"}
		}
		if !strings.EqualFold(scheme, "Bearer") || raw == "" {
			s.auth.auditor.AuthFailed("malformed_authorization", "", ip, ua)
			return &authError{code: "invalid_request", detail: "the Authorization header must be \"Bearer <token>\""}
		}
		if strings.HasPrefix(raw, domain.EnrollmentTokenPrefix) {
			s.auth.auditor.AuthFailed("enrollment_token_misused", "", ip, ua)
			return &authError{code: "invalid_token", detail: "a node enrollment token only enrolls a node (POST /api/v1/nodes)"}
		}
		subject, host, issued, err := s.auth.verify(req.Context(), raw)
		if err == nil && host != "" && (s.publicOrigin == "" || host != browserlogin.HostOf(s.publicOrigin)) {
			// A browser login's token for a tunnel host: valid there only.
			s.auth.auditor.AuthFailed("host_bound_token", "", ip, ua)
			return &authError{code: "invalid_token", detail: "this token was issued for another host's browser session and is valid only there"}
		}
		if err != nil {
			// token.Reason says what went wrong in the user's words and never quotes the token's
			// own fields (an unknown kid): nothing a caller sent is echoed.
			reason, detail := "invalid_token", token.Reason(err)
			switch {
			case errors.Is(err, token.ErrExpired):
				reason = "expired_token"
			case errors.Is(err, token.ErrUnknownKey):
				reason = "unknown_key"
			}
			s.auth.auditor.AuthFailed(reason, claimedSubject(raw), ip, ua)
			return &authError{code: "invalid_token", detail: detail}
		}
		if at, deleted := s.deletions.before(subject, issued); deleted {
			// Deleted everywhere after this token was issued: its roles are gone, and with this
			// neither can it read what needs no role (the user's own feed), as on the nodes.
			s.auth.auditor.AuthFailed("deleted_user", subject, ip, ua)
			return &authError{code: "invalid_token", detail: "the token's user was deleted at " + at.UTC().Format(time.RFC3339) + "; sign in again"}
		}
		ids := requestIDsFrom(c)
		actor := commands.Actor{ID: subject, ClientIP: ip, UserAgent: ua, RequestID: ids.request, CorrelationID: ids.correlation}.Bounded()
		c.Set(actorKey, actor)
		ctx := commands.WithActor(req.Context(), actor)
		if key := req.Header.Get(HeaderIdempotencyKey); key != "" {
			ctx = commands.WithIdempotencyKey(ctx, key)
		}
		c.SetRequest(req.WithContext(ctx))
		return next(c)
	}
}

const actorKey = "tunnelplane.actor"

func actorOf(c echo.Context) commands.Actor {
	a, _ := c.Get(actorKey).(commands.Actor)
	return a
}

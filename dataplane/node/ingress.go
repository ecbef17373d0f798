package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/crypto/ssh"
)

// reqState follows one ingress request through the proxy and its transport.
type reqState struct {
	route  Route
	sess   *session
	prefix string // "/t/<ref>" for path routing, "" for host routing
	remote string
	start  time.Time

	status   int
	class    string
	ttfb     atomic.Int64 // ns to response headers
	bytesIn  atomic.Int64
	bytesOut atomic.Int64
}

// serveIngress is the HTTP ingress: <ref>.<BaseDomain> (host routing) or /t/<ref>/… (path
// routing, the prefix is removed before forwarding). Callers present "Authorization: Bearer
// <user token>"; it is checked by the Authorizer and never forwarded.
func (n *Node) serveIngress(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	if err := n.notReady(); err != nil {
		ctx.Response.Header.Set("Retry-After", "1")
		writeProblem(ctx, startingProblem(err))
		return
	}
	ref, prefix, ok := n.resolveRef(ctx)
	if !ok {
		writeProblem(ctx, problem{Status: http.StatusNotFound, Slug: "no-tunnel",
			Title: "No tunnel named", Detail: "address a tunnel as <tunnel>." + n.baseDomainOr("<base domain>") + " or /t/<tunnel>/"})
		return
	}
	// No valid credential, no answer about which tunnels exist: a missing or invalid token gets
	// the same 401 for a tunnel that does not exist as for one that does.
	bearer, hasBearer := bearerToken(ctx)
	route, ok := n.cfg.Router.Resolve(ref)
	if !ok && hasBearer {
		if _, err := n.authorize(ctx, bearer, Route{Name: ref}); errors.Is(err, ErrUnauthenticated) {
			writeInvalidToken(ctx, err, "")
			return
		}
		writeProblem(ctx, problem{Status: http.StatusNotFound, Slug: "unknown-tunnel",
			Title: "Unknown tunnel", Detail: "no tunnel is called " + strconv.Quote(ref)})
		return
	}
	rs := &reqState{route: route, prefix: prefix, remote: ctx.RemoteAddr().String(), start: start}
	// The response body may still be streaming when this returns; then its end finishes the
	// request (endRequest), else this does.
	handedOff := false
	defer func() {
		if ok && !handedOff {
			n.endRequest(rs)
		}
	}()

	if !hasBearer {
		rs.class, rs.status = ClassUnauthenticated, http.StatusUnauthorized
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="tunnelplane"`)
		writeProblem(ctx, problem{Status: http.StatusUnauthorized, Slug: "unauthenticated",
			Title: "Authentication required", Detail: "send Authorization: Bearer <user token>", Tunnel: route.Name})
		return
	}
	if _, err := n.authorize(ctx, bearer, route); err != nil {
		switch {
		case errors.Is(err, ErrForbidden):
			rs.class, rs.status = ClassForbidden, http.StatusForbidden
			writeProblem(ctx, problem{Status: http.StatusForbidden, Slug: "forbidden",
				Title: "Not allowed to use this tunnel", Detail: err.Error(), Tunnel: route.Name})
		case errors.Is(err, ErrUnauthenticated):
			rs.class, rs.status = ClassUnauthenticated, http.StatusUnauthorized
			writeInvalidToken(ctx, err, route.Name)
		default:
			rs.class, rs.status = ClassAuthUnavailable, http.StatusServiceUnavailable
			n.log.Warn("ingress authorization failed", "tunnel_id", route.TunnelID, "error", err)
			writeProblem(ctx, problem{Status: http.StatusServiceUnavailable, Slug: "authorization-unavailable",
				Title: "Authorization is unavailable", Detail: "try again shortly", Tunnel: route.Name})
		}
		return
	}

	s := n.tunnelSession(route.TunnelID)
	if s == nil || s.ident.OrgID != route.OrgID || !s.acquire() {
		rs.class, rs.status = ClassAgentAbsent, http.StatusServiceUnavailable
		ctx.Response.Header.Set("Retry-After", "2")
		writeProblem(ctx, problem{Status: http.StatusServiceUnavailable, Slug: "agent-absent",
			Title: "Tunnel offline", Detail: "no agent is connected for tunnel " + strconv.Quote(route.Name) + " on this node", Tunnel: route.Name})
		return
	}
	rs.sess = s

	if int64(ctx.Request.Header.ContentLength()) > n.cfg.MaxRequestBody {
		rs.class, rs.status = ClassLimit, http.StatusRequestEntityTooLarge
		writeProblem(ctx, problem{Status: http.StatusRequestEntityTooLarge, Slug: "body-too-large",
			Title: "Request body too large", Detail: "the limit is " + strconv.FormatInt(n.cfg.MaxRequestBody, 10) + " bytes", Tunnel: route.Name})
		return
	}
	handedOff = n.forward(ctx, rs)
}

// writeInvalidToken answers a bearer token the authorizer did not accept.
func writeInvalidToken(ctx *fasthttp.RequestCtx, err error, tunnel string) {
	ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="tunnelplane", error="invalid_token"`)
	writeProblem(ctx, problem{Status: http.StatusUnauthorized, Slug: "unauthenticated",
		Title: "Invalid token", Detail: err.Error(), Tunnel: tunnel})
}

// endRequest ends what serveIngress began: the session's count of requests in flight, the
// metrics and the usage window.
func (n *Node) endRequest(rs *reqState) {
	if rs.sess != nil {
		rs.sess.release()
	}
	n.finishRequest(rs)
}

func (n *Node) baseDomainOr(s string) string {
	if n.cfg.BaseDomain != "" {
		return n.cfg.BaseDomain
	}
	return s
}

// resolveRef finds the tunnel a request names: the host label under BaseDomain, else the first
// path segment after /t/.
func (n *Node) resolveRef(ctx *fasthttp.RequestCtx) (ref, prefix string, ok bool) {
	if n.cfg.BaseDomain != "" {
		host := string(ctx.Host())
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.ToLower(strings.TrimSuffix(host, "."))
		// <tunnel>.<org>.<base domain> or <tunnel>.<base domain>.
		if label, found := strings.CutSuffix(host, "."+strings.ToLower(n.cfg.BaseDomain)); found && label != "" && strings.Count(label, ".") <= 1 {
			return label, "", true
		}
	}
	rest, found := bytes.CutPrefix(ctx.URI().PathOriginal(), []byte("/t/"))
	if !found {
		return "", "", false
	}
	seg := rest
	if i := bytes.IndexByte(rest, '/'); i >= 0 {
		seg = rest[:i]
	}
	ref, err := url.PathUnescape(string(seg))
	if err != nil || ref == "" {
		return "", "", false
	}
	return ref, "/t/" + string(seg), true
}

func bearerToken(ctx *fasthttp.RequestCtx) (string, bool) {
	scheme, tok, found := bytes.Cut(ctx.Request.Header.Peek("Authorization"), []byte(" "))
	if !found || !bytes.EqualFold(scheme, []byte("Bearer")) {
		return "", false
	}
	tok = bytes.TrimSpace(tok)
	return string(tok), len(tok) > 0
}

// errBodyTooLarge is a request body that grew past MaxRequestBody while it streamed.
type errBodyTooLarge struct{ limit int64 }

func (e *errBodyTooLarge) Error() string {
	return "request body larger than " + strconv.FormatInt(e.limit, 10) + " bytes"
}

// proxyError answers a request the tunnel could not carry.
func (n *Node) proxyError(ctx *fasthttp.RequestCtx, rs *reqState, err error) {
	name := rs.route.Name
	var tooLarge *errBodyTooLarge
	var oce *ssh.OpenChannelError
	p := problem{Tunnel: name}
	switch {
	case errors.As(err, &tooLarge) || errors.Is(err, fasthttp.ErrBodyTooLarge):
		rs.class = ClassLimit
		p.Status, p.Slug, p.Title = http.StatusRequestEntityTooLarge, "body-too-large", "Request body too large"
		p.Detail = "the limit is " + strconv.FormatInt(n.cfg.MaxRequestBody, 10) + " bytes"
		ctx.SetConnectionClose() // the rest of the body is not read
	case errors.Is(err, errCallerGone):
		// Reading the caller's body failed: it left, or stalled past a limit. If it is still
		// there it learns why; the metrics count it as canceled either way.
		rs.class, rs.status = ClassCanceled, 499
		ctx.SetConnectionClose()
		writeProblem(ctx, problem{Status: http.StatusBadRequest, Slug: "request-body-incomplete",
			Title: "The request body was not received whole", Detail: err.Error(), Tunnel: name})
		return
	case errors.Is(err, errHeaderTimeout):
		rs.class = ClassTimeout
		p.Status, p.Slug, p.Title, p.Detail = http.StatusGatewayTimeout, "upstream-timeout", "The upstream did not answer in time", err.Error()
	case errors.As(err, &oce):
		rs.class = ClassUpstream
		p.Status, p.Slug, p.Title = http.StatusBadGateway, "upstream-unreachable", "The agent could not reach its upstream"
		p.Detail = oce.Message
	case errors.Is(err, errAgentGone):
		rs.class = ClassAgentAbsent
		p.Status, p.Slug, p.Title, p.Detail = http.StatusServiceUnavailable, "agent-absent", "Tunnel offline", "the agent disconnected"
	default:
		rs.class = ClassUpstream
		p.Status, p.Slug, p.Title, p.Detail = http.StatusBadGateway, "tunnel-failed", "The tunnel failed", err.Error()
	}
	rs.status = p.Status
	n.log.Debug("ingress request failed", "tunnel_id", rs.route.TunnelID, "class", rs.class, "error", err)
	writeProblem(ctx, p)
}

func (n *Node) finishRequest(rs *reqState) {
	latency := time.Duration(rs.ttfb.Load())
	if latency == 0 {
		latency = time.Since(rs.start)
	}
	in, out := rs.bytesIn.Load(), rs.bytesOut.Load()
	n.usage.record(rs.route.OrgID, rs.route.TunnelID, rs.class, latency, in, out)
	m := n.metrics
	m.requests.WithLabelValues(statusClass(rs.status)).Inc()
	if rs.class != "" {
		m.errors.WithLabelValues(rs.class).Inc()
	}
	m.duration.Observe(latency.Seconds())
	m.ingressBytesIn.Add(float64(in))
	m.ingressBytesOut.Add(float64(out))
}

func statusClass(code int) string {
	switch {
	case code == 0:
		return "none"
	case code == 499:
		return "canceled"
	case code < 200:
		return "1xx"
	case code < 300:
		return "2xx"
	case code < 400:
		return "3xx"
	case code < 500:
		return "4xx"
	}
	return "5xx"
}

// problem is an RFC 9457 problem document.
type problem struct {
	Status    int
	Slug      string
	Title     string
	Detail    string
	Tunnel    string
	Supported []string
}

func (p problem) body() []byte {
	doc := struct {
		Type      string   `json:"type"`
		Title     string   `json:"title"`
		Status    int      `json:"status"`
		Detail    string   `json:"detail,omitempty"`
		Tunnel    string   `json:"tunnel,omitempty"`
		Supported []string `json:"supported_protocols,omitempty"`
	}{"https://tunnelplane.dev/problems/" + p.Slug, p.Title, p.Status, p.Detail, p.Tunnel, p.Supported}
	b, _ := json.Marshal(doc)
	return append(b, '\n')
}

// writeProblem answers an ingress request with p.
func writeProblem(ctx *fasthttp.RequestCtx, p problem) {
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.Response.Header.SetContentType("application/problem+json")
	ctx.Response.SetStatusCode(p.Status)
	ctx.Response.SetBody(p.body())
}

// writeHTTPProblem answers a net/http request (the agent endpoint) with p.
func writeHTTPProblem(w http.ResponseWriter, p problem) {
	body := p.body()
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_, _ = w.Write(body)
}

// authCache remembers successful authorizations for a short time, keyed by a hash of the token
// and the tunnel. Denials are not cached: a fixed permission works on the next request.
type authCache struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[[32]byte]authEntry
}

type authEntry struct {
	p   Principal
	exp time.Time
}

const authCacheMax = 16384

func newAuthCache(ttl time.Duration) *authCache {
	return &authCache{ttl: ttl, m: map[[32]byte]authEntry{}}
}

// ForgetAuthorizations drops every cached ingress authorization, so the next request of each
// caller is decided afresh. Call it when access may have been withdrawn (a role removed, a
// tunnel deleted, a token key revoked): the withdrawal then takes effect at once instead of
// when the cached entry expires.
func (n *Node) ForgetAuthorizations() {
	c := n.auth
	c.mu.Lock()
	clear(c.m)
	c.mu.Unlock()
}

func (n *Node) authorize(ctx context.Context, bearer string, r Route) (Principal, error) {
	c := n.auth
	if c.ttl <= 0 {
		return n.cfg.Authorizer.AuthorizeIngress(ctx, bearer, r)
	}
	h := sha256.New()
	h.Write([]byte(r.OrgID))
	h.Write([]byte{0})
	h.Write([]byte(r.TunnelID))
	h.Write([]byte{0})
	h.Write([]byte(bearer))
	var key [32]byte
	h.Sum(key[:0])
	now := time.Now()
	c.mu.Lock()
	e, ok := c.m[key]
	c.mu.Unlock()
	if ok && now.Before(e.exp) {
		return e.p, nil
	}
	p, err := n.cfg.Authorizer.AuthorizeIngress(ctx, bearer, r)
	if err != nil {
		return p, err
	}
	c.mu.Lock()
	if len(c.m) >= authCacheMax {
		for k, v := range c.m {
			if !now.Before(v.exp) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= authCacheMax {
			clear(c.m)
		}
	}
	c.m[key] = authEntry{p: p, exp: now.Add(c.ttl)}
	c.mu.Unlock()
	return p, nil
}

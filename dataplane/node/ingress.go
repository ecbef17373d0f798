package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
)

// reqState follows one ingress request through the proxy and its transport.
type reqState struct {
	route  Route
	sess   *session
	prefix string // "/t/<ref>" for path routing, "" for host routing
	host   []byte // the authority the request was routed by (Host, or an absolute-form target's)
	remote string
	start  time.Time
	// passAuthorization: the caller's Authorization header goes upstream (the tunnel credential
	// came in X-Tunnel-Key or Proxy-Authorization).
	passAuthorization bool
	// preflight: a CORS preflight carried without a credential (passthrough): its cookies are
	// not forwarded, and only the status and header of the upstream's answer come back.
	preflight bool
	live      *liveCall // in the registry of live calls (nil: refused)
	// waitUntil is when the call stops waiting for an agent session (FailoverWait from its first
	// wait; zero until it waited). reached: a byte of the request was written to an agent
	// channel, so the call is never sent again (failover.go).
	waitUntil time.Time
	reached   bool
	// forwarded: a call another node forwarded (peerserve.go), which goes to a local agent only;
	// gone then tells whether that node's connection ended. avoidPeers are the peers this call
	// failed on before any byte of it was sent (peers.go).
	forwarded  bool
	gone       func() bool
	avoidPeers []string

	status   int
	class    string
	ttfb     atomic.Int64 // ns to response headers
	bytesIn  atomic.Int64
	bytesOut atomic.Int64

	// The call in the usage windows (under usage.mu): its account, its place in the list of open
	// calls, and the bytes already counted in earlier windows.
	uacc            *usageAcc
	uprev, unext    *reqState
	seenIn, seenOut int64

	call callInfo // the call's record (calls.go), when its tunnel logs calls (route.Calls)

	trace    *callTrace // the call's span (trace.go), when the node traces
	onTraced bool       // the exchange is on a ChannelTraced
	hopTP    string     // the traceparent a peer asked for: its span's (peers.go)
}

// serveIngress is the HTTP ingress: <ref>.<BaseDomain> (host routing) or /t/<ref>/… (path
// routing, the prefix is removed before forwarding). Callers present a user token or a tunnel
// access key (callerCredential): in "X-Tunnel-Key", in "Proxy-Authorization: Bearer", in a
// browser session's cookie on a tunnel host (browser.go), or in "Authorization: Bearer". It is
// checked by the Authorizer and never forwarded; when it did not come in Authorization, the
// caller's Authorization header is the upstream's and passes through.
//
// The order matters: a malformed request is refused before anything else; then the caller is
// authenticated before the tunnel is looked up, so that without a valid credential every answer
// is the same 401 whether the tunnel exists or not (and such traffic is counted per node, not in
// a tenant's usage); the tunnel is resolved for that caller, and one it may not learn about is
// answered like one that does not exist.
func (n *Node) serveIngress(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	if err := n.notReady(); err != nil {
		ctx.Response.Header.Set("Retry-After", "1")
		writeProblem(ctx, startingProblem(err))
		return
	}
	if why, ok := checkRequest(&ctx.Request.Header); !ok {
		n.metrics.refused.WithLabelValues("bad_request").Inc()
		ctx.SetConnectionClose()
		writeProblem(ctx, problem{Status: http.StatusBadRequest, Slug: "bad-request", Title: "Malformed request", Detail: string(why)})
		return
	}
	ref, prefix, ok := n.resolveRef(ctx)
	if !ok {
		writeProblem(ctx, problem{Status: http.StatusNotFound, Slug: "no-tunnel",
			Title: "No tunnel named", Detail: "address a tunnel as <tunnel>.<org>." + n.baseDomainOr("<base domain>") + " or /t/<tunnel>.<org>/"})
		return
	}
	if prefix == "" && bytes.HasPrefix(ctx.Path(), []byte(domain.ReservedPathPrefix)) {
		// The node's own paths on a tunnel host (browser.go): a browser login's return, logout.
		n.serveReserved(ctx)
		return
	}
	if origin := ctx.Request.Header.Peek("Origin"); len(origin) > 0 && corsAddressable(ref) {
		// A cross-origin call from a browser (cors.go): the tunnel's setting, if it has one,
		// answers a preflight, and grants every answer from here on, refusals included.
		route, found := n.cfg.Router.Resolve(ref, Principal{})
		if found && route.CORS != nil {
			if isPreflight(&ctx.Request.Header) {
				if route.CORS.Passthrough {
					n.passPreflight(ctx, route, prefix, start)
				} else {
					n.answerPreflight(ctx, route.CORS, origin)
				}
				return
			}
			defer grantCORS(ctx, route.CORS, origin)
		}
	}
	bearer, passAuthorization, hasBearer := callerCredential(ctx)
	fromCookie := false
	if !passAuthorization && prefix == "" {
		// A browser session on this tunnel host (browser.go) comes before Authorization, which
		// is then the upstream's (a page's fetch to an API that wants its own key).
		if v, ok := sessionCredential(&ctx.Request.Header); ok {
			bearer, passAuthorization, hasBearer, fromCookie = v, true, true, true
		}
	}
	loginPossible := prefix == "" && n.cfg.LoginURL != "" && browserNavigation(&ctx.Request.Header)
	if !hasBearer && loginPossible {
		n.redirectToLogin(ctx)
		return
	}
	if !hasBearer {
		n.refuseUnauthenticated(ctx, "missing", problem{Status: http.StatusUnauthorized, Slug: "unauthenticated",
			Title: "Authentication required", Detail: "send Authorization: Bearer <user token or access key>, or the access key in X-Tunnel-Key"},
			`Bearer realm="tunnelplane"`)
		return
	}
	caller, err := n.authenticate(ctx, bearer)
	switch {
	case errors.Is(err, ErrUnauthenticated) && fromCookie && loginPossible:
		// The session ended (its token expired, or its key was revoked): log in again.
		n.redirectToLogin(ctx)
		return
	case errors.Is(err, ErrUnauthenticated):
		n.refuseInvalid(ctx, err)
		return
	case err != nil:
		n.log.Warn("ingress authentication failed", "error", err)
		n.metrics.refused.WithLabelValues("auth_unavailable").Inc()
		writeProblem(ctx, problem{Status: http.StatusServiceUnavailable, Slug: "authorization-unavailable",
			Title: "Authorization is unavailable", Detail: "try again shortly"})
		return
	}
	if caller.Host != "" && caller.Host != requestHost(ctx) {
		// A browser login's token for another tunnel host (or the API's).
		n.refuseUnauthenticated(ctx, "host", problem{Status: http.StatusUnauthorized, Slug: "unauthenticated",
			Title: "Invalid token", Detail: "this token was issued for another host's browser session and is valid only there"},
			`Bearer realm="tunnelplane", error="invalid_token"`)
		return
	}
	caller.RemoteIP = remoteIP(ctx)
	unknown := problem{Status: http.StatusNotFound, Slug: "unknown-tunnel", Title: "Unknown tunnel",
		Detail: "no tunnel you may use has this name; name it as <tunnel>.<org>"}
	route, found := n.cfg.Router.Resolve(ref, caller)
	if !found {
		n.metrics.refused.WithLabelValues("unknown_tunnel").Inc()
		writeProblem(ctx, unknown)
		return
	}
	if fromCookie && isWebSocketUpgrade(&ctx.Request.Header) && !webSocketOriginAllowed(ctx, route) {
		// A browser sends the cookie with any page's WebSocket: only the tunnel's own pages and
		// the origins it lists may open one (cross-site WebSocket hijacking).
		n.metrics.refused.WithLabelValues("websocket_origin").Inc()
		ctx.SetConnectionClose()
		writeProblem(ctx, problem{Status: http.StatusForbidden, Slug: "websocket-origin-refused", Title: "Origin not allowed",
			Detail: "a WebSocket opened with the browser session must come from the tunnel's own pages or an origin its CORS setting lists",
			Tunnel: route.Name})
		return
	}
	// Allowed, the call is held among the live calls until it ends: a withdrawal cuts it.
	live, err := n.admitCall(ctx, caller, bearer, route)
	if errors.Is(err, ErrUnauthenticated) {
		// Valid when it was authenticated (and cached), no longer: a revoked or expired access key.
		n.refuseInvalid(ctx, err)
		return
	}
	if errors.Is(err, ErrUnknownTunnel) {
		n.metrics.refused.WithLabelValues("unknown_tunnel").Inc()
		writeProblem(ctx, unknown)
		return
	}
	rs := &reqState{route: route, prefix: prefix, host: ctx.Host(), remote: ctx.RemoteAddr().String(), start: start, passAuthorization: passAuthorization, live: live}
	if n.tracer != nil {
		rs.trace = ownTrace(ctx)
	}
	// From here the call is the tenant's: it is open in the caller's usage until endRequest
	// (from its start: the microseconds of authentication count too, and no clock is read).
	n.usage.begin(rs, caller, start)
	if route.Calls {
		beginCall(ctx, rs, caller, start)
	}
	// The response body may still be streaming when this returns; then its end finishes the
	// request (endRequest), else this does.
	handedOff := false
	defer func() {
		if !handedOff {
			n.endRequest(rs)
		}
	}()
	if err != nil {
		if errors.Is(err, ErrForbidden) {
			rs.class, rs.status = ClassForbidden, http.StatusForbidden
			writeProblem(ctx, problem{Status: http.StatusForbidden, Slug: "forbidden",
				Title: "Not allowed to use this tunnel", Detail: err.Error(), Tunnel: route.Name})
			return
		}
		rs.class, rs.status = ClassAuthUnavailable, http.StatusServiceUnavailable
		n.log.Warn("ingress authorization failed", "tunnel_id", route.TunnelID, "error", err)
		writeProblem(ctx, problem{Status: http.StatusServiceUnavailable, Slug: "authorization-unavailable",
			Title: "Authorization is unavailable", Detail: "try again shortly", Tunnel: route.Name})
		return
	}

	// A call refused anyway does not wait for an agent.
	if int64(ctx.Request.Header.ContentLength()) > n.cfg.MaxRequestBody {
		rs.class, rs.status = ClassLimit, http.StatusRequestEntityTooLarge
		writeProblem(ctx, problem{Status: http.StatusRequestEntityTooLarge, Slug: "body-too-large",
			Title: "Request body too large", Detail: "the limit is " + strconv.FormatInt(n.cfg.MaxRequestBody, 10) + " bytes", Tunnel: route.Name})
		return
	}
	// The node's cookies are never the upstream's to see.
	stripOwnCookies(&ctx.Request.Header)
	if !n.takeSession(ctx, rs) {
		return
	}
	handedOff = n.forward(ctx, rs)
}

// takeSession holds a call of rs's tunnel on the session of its agent (rs.sess), waiting for one
// when none is there (failover.go), or answers why it cannot (503) and returns false.
func (n *Node) takeSession(ctx *fasthttp.RequestCtx, rs *reqState) bool {
	if err := n.holdSession(ctx, rs, nil); err != nil {
		n.noSession(ctx, rs, err)
		return false
	}
	return true
}

// passPreflight carries a CORS preflight to the upstream of a tunnel in passthrough mode, without
// a credential: only a preflight (isPreflight) with no body, its credentials and cookies not
// forwarded, and only the status and header of the answer returned (respond). It counts in the
// tunnel's usage as an anonymous call.
func (n *Node) passPreflight(ctx *fasthttp.RequestCtx, route Route, prefix string, start time.Time) {
	if cl := ctx.Request.Header.ContentLength(); cl != 0 && cl != -2 {
		n.metrics.refused.WithLabelValues("cors_preflight").Inc()
		ctx.SetConnectionClose()
		writeProblem(ctx, problem{Status: http.StatusBadRequest, Slug: "bad-preflight", Title: "Malformed preflight", Detail: "a preflight has no body"})
		return
	}
	ctx.SetConnectionClose() // as after every answer to a caller without a credential
	rs := &reqState{route: route, prefix: prefix, host: ctx.Host(), remote: ctx.RemoteAddr().String(), start: start, preflight: true}
	if n.tracer != nil {
		rs.trace = ownTrace(ctx)
	}
	n.usage.begin(rs, Principal{}, start)
	if route.Calls {
		beginCall(ctx, rs, Principal{}, start)
	}
	defer n.endRequest(rs)
	if n.takeSession(ctx, rs) {
		n.forward(ctx, rs) // never streams: respond keeps no body of a preflight's answer
	}
}

// refuseUnauthenticated answers a caller without a valid credential. The answer depends on the
// credential only, never on the tunnel named; the connection closes after it (an anonymous
// client holds no idle connection, buffers or goroutine of the node's), and the refusal is
// counted per node, not in the usage of the tenant whose tunnel was named.
func (n *Node) refuseUnauthenticated(ctx *fasthttp.RequestCtx, reason string, p problem, challenge string) {
	n.metrics.refused.WithLabelValues("unauthenticated_" + reason).Inc()
	ctx.SetConnectionClose()
	ctx.Response.Header.Set("WWW-Authenticate", challenge)
	writeProblem(ctx, p)
}

// refuseInvalid answers a credential the Authorizer refused (ErrUnauthenticated) with the
// reason in the user's words, never what the credential says.
func (n *Node) refuseInvalid(ctx *fasthttp.RequestCtx, err error) {
	n.refuseUnauthenticated(ctx, "invalid", problem{Status: http.StatusUnauthorized, Slug: "unauthenticated",
		Title: "Invalid token", Detail: token.Reason(err)}, `Bearer realm="tunnelplane", error="invalid_token"`)
}

// remoteIP is the caller's address (the zero Addr when it is not a TCP peer).
func remoteIP(ctx *fasthttp.RequestCtx) netip.Addr {
	if a, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// endRequest ends what serveIngress began: the session's count of requests in flight, the
// metrics and the usage window.
func (n *Node) endRequest(rs *reqState) {
	n.live.remove(rs.live)
	if rs.sess != nil {
		if rs.sess.peer != nil {
			n.metrics.forwardedCalls.Inc()
		}
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

// hostRef is the tunnel a host name addresses under BaseDomain: <tunnel>.<org>.<base domain> or
// <tunnel>.<base domain>.
func (n *Node) hostRef(host []byte) (string, bool) {
	if n.cfg.BaseDomain == "" {
		return "", false
	}
	h := string(host)
	if hh, _, err := net.SplitHostPort(h); err == nil {
		h = hh
	}
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	label, found := strings.CutSuffix(h, "."+strings.ToLower(n.cfg.BaseDomain))
	if !found || label == "" || strings.Count(label, ".") > 1 {
		return "", false
	}
	return label, true
}

// resolveRef finds the tunnel a request names: the host label under BaseDomain, else the first
// path segment after /t/ (of the raw path: what routes is what is forwarded).
func (n *Node) resolveRef(ctx *fasthttp.RequestCtx) (ref, prefix string, ok bool) {
	if ref, ok := n.hostRef(ctx.Host()); ok {
		return ref, "", true
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

// callerCredential is the tunnel credential a request presents: X-Tunnel-Key, else a bearer
// Proxy-Authorization, else a bearer Authorization. passAuthorization tells that it did not
// come in Authorization, whose value then belongs to the upstream (an OpenAI-compatible server's
// own API key). A request that sends X-Tunnel-Key empty presents nothing: the credential is then
// never taken from Authorization instead. A Proxy-Authorization in another scheme (Basic, for
// some proxy on the way) is not the tunnel's: it is ignored (and, hop-by-hop, never forwarded).
func callerCredential(ctx *fasthttp.RequestCtx) (cred string, passAuthorization, ok bool) {
	h := &ctx.Request.Header
	if v := h.Peek("X-Tunnel-Key"); v != nil {
		v = bytes.TrimSpace(v)
		return string(v), true, len(v) > 0
	}
	if tok, ok := bearerValue(h.Peek("Proxy-Authorization")); ok {
		return tok, true, true
	}
	tok, ok := bearerValue(h.Peek("Authorization"))
	return tok, false, ok
}

func bearerValue(v []byte) (string, bool) {
	scheme, tok, found := bytes.Cut(v, []byte(" "))
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
	case errors.Is(err, errAccessWithdrawn):
		rs.class = ClassForbidden
		p.Status, p.Slug, p.Title = http.StatusForbidden, "access-withdrawn", "Access to this tunnel was withdrawn"
		p.Detail = "your access to the tunnel ended while the call was in flight"
		ctx.SetConnectionClose()
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
			Title: "The request body was not received whole", Tunnel: name})
		return
	case errors.Is(err, errAgentUnresponsive):
		rs.class = ClassAgentAbsent
		ctx.Response.Header.Set("Retry-After", "5")
		p.Status, p.Slug, p.Title = http.StatusServiceUnavailable, "agent-unresponsive", "The agent is not responding"
		p.Detail = "the agent did not answer a keepalive within " + n.cfg.KeepaliveTimeout.String() + "; the node closed its connection"
	case errors.Is(err, errHeaderTimeout):
		rs.class = ClassTimeout
		p.Status, p.Slug, p.Title, p.Detail = http.StatusGatewayTimeout, "upstream-timeout", "The upstream did not answer in time", errHeaderTimeout.Error()
	case errors.Is(err, errOpenTimeout):
		rs.class = ClassTimeout
		p.Status, p.Slug, p.Title, p.Detail = http.StatusGatewayTimeout, "agent-timeout", "The agent did not answer in time",
			"the agent did not accept the connection within "+n.cfg.ChannelOpenTimeout.String()
	case errors.Is(err, errInvalidResponse):
		rs.class = ClassUpstream
		p.Status, p.Slug, p.Title, p.Detail = http.StatusBadGateway, "upstream-invalid-response", "The upstream's response was malformed", errInvalidResponse.Error()
	case errors.As(err, &oce):
		rs.class = ClassUpstream
		p.Status, p.Slug, p.Title = http.StatusBadGateway, "upstream-unreachable", "The agent could not reach its upstream"
		p.Detail = oce.Message
		if len(p.Detail) > 256 {
			p.Detail = p.Detail[:256]
		}
	case errors.Is(err, errAgentGone):
		rs.class = ClassAgentAbsent
		p.Status, p.Slug, p.Title, p.Detail = http.StatusServiceUnavailable, "agent-absent", "Tunnel offline", "the agent disconnected"
	default:
		// The error may quote what the upstream sent (fasthttp's parse errors do): logged, not
		// shown.
		rs.class = ClassUpstream
		p.Status, p.Slug, p.Title, p.Detail = http.StatusBadGateway, "tunnel-failed", "The tunnel failed", "the upstream's response could not be read whole"
	}
	rs.status = p.Status
	n.log.Debug("ingress request failed", "tunnel_id", rs.route.TunnelID, "class", rs.class, "error", err)
	writeProblem(ctx, p)
}

func (n *Node) finishRequest(rs *reqState) {
	now := time.Now()
	latency, ttfb := now.Sub(rs.start), time.Duration(rs.ttfb.Load())
	in, out := rs.bytesIn.Load(), rs.bytesOut.Load()
	n.usage.end(rs, now, latency, ttfb)
	n.recordCall(rs, latency)
	rs.endTrace()
	m := n.metrics
	m.requests.WithLabelValues(statusClass(rs.status)).Inc()
	if rs.class != "" {
		m.errors.WithLabelValues(rs.class).Inc()
	}
	if ttfb > 0 {
		// The metric is time to first byte; a call the node answered itself has only its duration.
		latency = ttfb
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

// openAIError is the "error" member of a problem document, in the shape of the OpenAI API's
// errors: OpenAI client libraries show error.message and ignore every other member, so without
// it a caller of a model behind a tunnel reads "401 status code (no body)".
type openAIError struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	Code    string `json:"code"`
}

// openAIErrorType is the OpenAI API's error type for a status.
func openAIErrorType(status int) string {
	switch {
	case status == 401:
		return "authentication_error"
	case status == 403:
		return "permission_error"
	case status == 404:
		return "not_found_error"
	case status == 429:
		return "rate_limit_error"
	case status < 500:
		return "invalid_request_error"
	}
	return "server_error"
}

func (p problem) body() []byte {
	msg := p.Detail
	if msg == "" {
		msg = p.Title
	}
	doc := struct {
		Type      string      `json:"type"`
		Title     string      `json:"title"`
		Status    int         `json:"status"`
		Detail    string      `json:"detail,omitempty"`
		Tunnel    string      `json:"tunnel,omitempty"`
		Supported []string    `json:"supported_protocols,omitempty"`
		Error     openAIError `json:"error"`
	}{domain.ProblemTypeBase + p.Slug, p.Title, p.Status, p.Detail, p.Tunnel, p.Supported,
		openAIError{Message: msg, Type: openAIErrorType(p.Status), Code: p.Slug}}
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

// authCache remembers successful caller authentications for a short time, keyed by a hash of
// the token. Failures are not cached.
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

// ForgetAuthorizations drops every cached caller authentication, so the next request of each
// caller is checked afresh. Call it when a token key is revoked. (Authorization itself is decided
// on every request, so a withdrawn role or deleted tunnel needs nothing.)
func (n *Node) ForgetAuthorizations() {
	c := n.auth
	c.mu.Lock()
	clear(c.m)
	c.mu.Unlock()
}

func (n *Node) authenticate(ctx context.Context, bearer string) (Principal, error) {
	c := n.auth
	if c.ttl <= 0 {
		return n.cfg.Authorizer.AuthenticateCaller(ctx, bearer)
	}
	key := sha256.Sum256([]byte(bearer))
	now := time.Now()
	c.mu.Lock()
	e, ok := c.m[key]
	c.mu.Unlock()
	if ok && now.Before(e.exp) {
		return e.p, nil
	}
	p, err := n.cfg.Authorizer.AuthenticateCaller(ctx, bearer)
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

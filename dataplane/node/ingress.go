package node

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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

// IngressHandler is the HTTP ingress: <ref>.<BaseDomain> (host routing) or /t/<ref>/… (path
// routing, the prefix is removed before forwarding). Callers present "Authorization: Bearer
// <user token>"; it is checked by the Authorizer and never forwarded.
func (n *Node) IngressHandler() http.Handler { return http.HandlerFunc(n.serveIngress) }

func (n *Node) serveIngress(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ref, prefix, ok := n.resolveRef(r)
	if !ok {
		writeProblem(w, problem{Status: http.StatusNotFound, Slug: "no-tunnel",
			Title: "No tunnel named", Detail: "address a tunnel as <tunnel>." + n.baseDomainOr("<base domain>") + " or /t/<tunnel>/"})
		return
	}
	// No credential, no answer about which tunnels exist.
	bearer, hasBearer := bearerToken(r)
	route, ok := n.cfg.Router.Resolve(ref)
	if !ok && hasBearer {
		writeProblem(w, problem{Status: http.StatusNotFound, Slug: "unknown-tunnel",
			Title: "Unknown tunnel", Detail: "no tunnel is called " + strconv.Quote(ref)})
		return
	}
	rs := &reqState{route: route, prefix: prefix, remote: r.RemoteAddr, start: start}
	defer func() {
		rec := recover()
		if rec != nil && rs.class == "" {
			// forward aborts the handler when copying the response fails midway.
			if r.Context().Err() != nil {
				rs.class = ClassCanceled
			} else {
				rs.class = ClassUpstream
			}
		}
		if ok {
			n.finishRequest(rs)
		}
		if rec != nil {
			panic(rec)
		}
	}()

	if !hasBearer {
		rs.class, rs.status = ClassUnauthenticated, http.StatusUnauthorized
		w.Header().Set("WWW-Authenticate", `Bearer realm="tunnelplane"`)
		writeProblem(w, problem{Status: http.StatusUnauthorized, Slug: "unauthenticated",
			Title: "Authentication required", Detail: "send Authorization: Bearer <user token>", Tunnel: route.Name})
		return
	}
	if _, err := n.authorize(r.Context(), bearer, route); err != nil {
		switch {
		case errors.Is(err, ErrForbidden):
			rs.class, rs.status = ClassForbidden, http.StatusForbidden
			writeProblem(w, problem{Status: http.StatusForbidden, Slug: "forbidden",
				Title: "Not allowed to use this tunnel", Detail: err.Error(), Tunnel: route.Name})
		case errors.Is(err, ErrUnauthenticated):
			rs.class, rs.status = ClassUnauthenticated, http.StatusUnauthorized
			w.Header().Set("WWW-Authenticate", `Bearer realm="tunnelplane", error="invalid_token"`)
			writeProblem(w, problem{Status: http.StatusUnauthorized, Slug: "unauthenticated",
				Title: "Invalid token", Detail: err.Error(), Tunnel: route.Name})
		default:
			rs.class, rs.status = ClassAuthUnavailable, http.StatusServiceUnavailable
			n.log.Warn("ingress authorization failed", "tunnel_id", route.TunnelID, "error", err)
			writeProblem(w, problem{Status: http.StatusServiceUnavailable, Slug: "authorization-unavailable",
				Title: "Authorization is unavailable", Detail: "try again shortly", Tunnel: route.Name})
		}
		return
	}

	s := n.tunnelSession(route.TunnelID)
	if s == nil || s.ident.OrgID != route.OrgID || !s.acquire() {
		rs.class, rs.status = ClassAgentAbsent, http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "2")
		writeProblem(w, problem{Status: http.StatusServiceUnavailable, Slug: "agent-absent",
			Title: "Tunnel offline", Detail: "no agent is connected for tunnel " + strconv.Quote(route.Name) + " on this node", Tunnel: route.Name})
		return
	}
	defer s.release()
	rs.sess = s

	if r.ContentLength > n.cfg.MaxRequestBody {
		rs.class, rs.status = ClassLimit, http.StatusRequestEntityTooLarge
		writeProblem(w, problem{Status: http.StatusRequestEntityTooLarge, Slug: "body-too-large",
			Title: "Request body too large", Detail: "the limit is " + strconv.FormatInt(n.cfg.MaxRequestBody, 10) + " bytes", Tunnel: route.Name})
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &countingBody{r: http.MaxBytesReader(w, r.Body, n.cfg.MaxRequestBody), n: &rs.bytesIn}
	}
	r.Header.Del("Authorization")
	// Streams in both directions (an echo, a bidirectional API) need the request body readable
	// after the response has started.
	_ = http.NewResponseController(w).EnableFullDuplex()
	n.forward(w, r, rs)
}

func (n *Node) baseDomainOr(s string) string {
	if n.cfg.BaseDomain != "" {
		return n.cfg.BaseDomain
	}
	return s
}

// resolveRef finds the tunnel a request names: the host label under BaseDomain, else the first
// path segment after /t/.
func (n *Node) resolveRef(r *http.Request) (ref, prefix string, ok bool) {
	if n.cfg.BaseDomain != "" {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.ToLower(strings.TrimSuffix(host, "."))
		if label, found := strings.CutSuffix(host, "."+strings.ToLower(n.cfg.BaseDomain)); found && label != "" && !strings.Contains(label, ".") {
			return label, "", true
		}
	}
	p := r.URL.EscapedPath()
	rest, found := strings.CutPrefix(p, "/t/")
	if !found {
		return "", "", false
	}
	seg := rest
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		seg = rest[:i]
	}
	ref, err := url.PathUnescape(seg)
	if err != nil || ref == "" {
		return "", "", false
	}
	return ref, "/t/" + seg, true
}

func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// proxyError answers a request the tunnel could not carry.
func (n *Node) proxyError(w http.ResponseWriter, r *http.Request, rs *reqState, err error) {
	name := rs.route.Name
	var mbe *http.MaxBytesError
	var oce *ssh.OpenChannelError
	p := problem{Tunnel: name}
	switch {
	case errors.As(err, &mbe):
		rs.class = ClassLimit
		p.Status, p.Slug, p.Title = http.StatusRequestEntityTooLarge, "body-too-large", "Request body too large"
		p.Detail = "the limit is " + strconv.FormatInt(mbe.Limit, 10) + " bytes"
	case r.Context().Err() != nil:
		rs.class, rs.status = ClassCanceled, 499 // the caller is gone: nobody reads an answer
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
	writeProblem(w, p)
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

type countingBody struct {
	r io.ReadCloser
	n *atomic.Int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingBody) Close() error { return c.r.Close() }

// problem is an RFC 9457 problem document.
type problem struct {
	Status    int
	Slug      string
	Title     string
	Detail    string
	Tunnel    string
	Supported []string
}

func writeProblem(w http.ResponseWriter, p problem) {
	doc := struct {
		Type      string   `json:"type"`
		Title     string   `json:"title"`
		Status    int      `json:"status"`
		Detail    string   `json:"detail,omitempty"`
		Tunnel    string   `json:"tunnel,omitempty"`
		Supported []string `json:"supported_protocols,omitempty"`
	}{"https://tunnelplane.dev/problems/" + p.Slug, p.Title, p.Status, p.Detail, p.Tunnel, p.Supported}
	body, _ := json.Marshal(doc)
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	w.Write(append(body, '\n'))
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

package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/tunnelplane/tunnelplane/commands/browserlogin"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

// Server is the REST admin API. Serve its Handler with any http.Server; Start before serving and
// Stop at the end.
type Server struct {
	cfg  Config
	log  *slog.Logger
	e    *echo.Echo
	auth *authenticator
	// deletions are the users deleted everywhere, followed from the log from Start on.
	deletions userDeletions

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight prometheus.Gauge

	routes map[string]bool // registered route templates, to label metrics without unbounded paths
	orgIDs sync.Map        // org name or id → org id; organizations are never renamed or deleted
	doc    []byte          // the OpenAPI document, rendered once

	live atomic.Pointer[LiveNodes]

	forecasts chan struct{} // a slot per forecast running (maxForecastsAtOnce)
	logins    chan struct{} // a slot per ID token being verified (maxLoginsAtOnce)
	// publicOrigin is Config.PublicURL; loginPatterns the origins a browser login may return to.
	publicOrigin  string
	loginPatterns []browserlogin.Pattern
	feeds         feeds // notification feeds open, per user
	// feedsCtx ends every notification feed (CloseStreams): a graceful HTTP shutdown would
	// otherwise wait for feeds that never end by themselves.
	feedsCtx   context.Context
	closeFeeds context.CancelFunc

	life lifecycle.Lifecycle
}

// New builds the API. It starts nothing; call Start.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, log: cfg.Logger, routes: map[string]bool{}, forecasts: make(chan struct{}, maxForecastsAtOnce),
		logins: make(chan struct{}, maxLoginsAtOnce), publicOrigin: cfg.PublicURL}
	for _, o := range cfg.BrowserLoginOrigins {
		p, _ := browserlogin.ParsePattern(o) // Validate checked it
		s.loginPatterns = append(s.loginPatterns, p)
	}
	s.feedsCtx, s.closeFeeds = context.WithCancel(context.Background())
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tunnelplane_http_requests_total",
		Help: "HTTP requests of the admin API by method, route template and status code."}, []string{"method", "route", "code"})
	s.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tunnelplane_http_request_duration_seconds",
		Help: "Latency of admin API requests by method and route template.", Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}},
		[]string{"method", "route"})
	s.inflight = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tunnelplane_http_requests_in_flight", Help: "Admin API requests being served."})
	for _, c := range []prometheus.Collector{s.requests, s.duration, s.inflight} {
		if err := cfg.Registry.Register(c); err != nil {
			return nil, fmt.Errorf("api: register metrics: %w", err)
		}
	}
	auth, err := newAuthenticator(s)
	if err != nil {
		return nil, err
	}
	s.auth = auth

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	// The client address is the peer's; X-Forwarded-For is not trusted (it would let any caller
	// write any address into the audit log).
	e.IPExtractor = echo.ExtractIPDirect()
	e.Use(s.observe)
	s.e = e
	s.register()
	doc, err := s.renderOpenAPI()
	if err != nil {
		return nil, err
	}
	s.doc = doc
	return s, nil
}

// Start loads the token keys (and a JWKS) and the users deleted everywhere, and keeps both fresh
// until Stop.
func (s *Server) Start(ctx context.Context) error {
	return s.life.Start(ctx, "api", func(context.Context) error {
		if err := s.auth.load(ctx); err != nil {
			return fmt.Errorf("api: %w", err)
		}
		follow, err := s.followDeletions(ctx)
		if err != nil {
			return fmt.Errorf("api: read the user deletions: %w", err)
		}
		s.life.Go(s.auth.refreshLoop)
		s.life.Go(follow)
		return nil
	})
}

// Stop ends the key refreshers and the notification feeds. Safe to call twice.
func (s *Server) Stop() {
	s.closeFeeds()
	s.life.Stop()
}

// CloseStreams ends every notification feed (their clients reconnect with Last-Event-ID):
// register it with http.Server.RegisterOnShutdown, so a graceful shutdown does not wait for them.
func (s *Server) CloseStreams() { s.closeFeeds() }

// Handler serves the API.
func (s *Server) Handler() http.Handler { return s.e }

// Routes lists the registered routes as "METHOD /path/{param}" (OpenAPI path syntax).
func (s *Server) Routes() []string {
	var out []string
	for _, r := range s.e.Routes() {
		if r.Method == echo.RouteNotFound {
			continue
		}
		out = append(out, r.Method+" "+openAPIPath(r.Path))
	}
	return out
}

// openAPIPath turns echo's /a/:b into OpenAPI's /a/{b}.
func openAPIPath(p string) string {
	parts := strings.Split(p, "/")
	for i, part := range parts {
		if strings.HasPrefix(part, ":") {
			parts[i] = "{" + part[1:] + "}"
		}
	}
	return strings.Join(parts, "/")
}

// route registers a handler; authenticated routes get the bearer-token middleware.
func (s *Server) route(method, path string, h echo.HandlerFunc, authenticated bool) {
	if authenticated {
		s.e.Add(method, path, h, s.authenticate)
	} else {
		s.e.Add(method, path, h)
	}
	s.routes[path] = true
}

func (s *Server) register() {
	s.route(http.MethodGet, "/healthz", s.healthz, false)
	s.route(http.MethodGet, "/readyz", s.readyz, false)
	s.route(http.MethodGet, "/metrics", echo.WrapHandler(promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{})), false)
	s.route(http.MethodGet, "/api/v1/openapi.json", s.openAPI, false)

	s.route(http.MethodPost, "/api/v1/orgs", s.createOrg, true)
	s.route(http.MethodGet, "/api/v1/orgs", s.listOrgs, true)
	s.route(http.MethodGet, "/api/v1/orgs/:org", s.getOrg, true)

	s.route(http.MethodPost, "/api/v1/tunnels", s.createTunnel, true)
	s.route(http.MethodGet, "/api/v1/tunnels", s.listTunnels, true)
	s.route(http.MethodGet, "/api/v1/tunnels/:id", s.getTunnel, true)
	s.route(http.MethodPatch, "/api/v1/tunnels/:id", s.updateTunnel, true)
	s.route(http.MethodDelete, "/api/v1/tunnels/:id", s.deleteTunnel, true)
	s.route(http.MethodPost, "/api/v1/tunnels/:id/tokens", s.issueToken, true)
	// The tunnel's agent token authenticates this one (discoverNodes), not a user's.
	s.route(http.MethodGet, "/api/v1/tunnels/:id/nodes", s.discoverNodes, false)

	s.route(http.MethodGet, "/api/v1/sessions", s.listSessions, true)
	s.route(http.MethodGet, "/api/v1/tokens", s.listTokens, true)
	s.route(http.MethodGet, "/api/v1/tokens/:id", s.getToken, true)
	s.route(http.MethodDelete, "/api/v1/tokens/:id", s.revokeToken, true)

	s.route(http.MethodPost, "/api/v1/tunnels/:id/access-keys", s.issueAccessKey, true)
	s.route(http.MethodPost, "/api/v1/access-keys", s.issueLabelAccessKey, true)
	s.route(http.MethodGet, "/api/v1/access-keys", s.listAccessKeys, true)
	s.route(http.MethodGet, "/api/v1/access-keys/:id", s.getAccessKey, true)
	s.route(http.MethodDelete, "/api/v1/access-keys/:id", s.revokeAccessKey, true)

	s.route(http.MethodPost, "/api/v1/tunnels/:id/grants", s.createGrant, true)
	s.route(http.MethodGet, "/api/v1/tunnels/:id/grants", s.listGrants, true)
	s.route(http.MethodDelete, "/api/v1/tunnels/:id/grants/:grant_id", s.revokeGrant, true)
	s.route(http.MethodPut, "/api/v1/tunnels/:id/access-policy", s.setAccessPolicy, true)
	s.route(http.MethodPut, "/api/v1/tunnels/:id/access-log", s.setAccessLog, true)
	s.route(http.MethodGet, "/api/v1/tunnels/:id/access", s.listAccessCalls, true)
	s.route(http.MethodPost, "/api/v1/access-requests", s.requestAccess, true)
	s.route(http.MethodGet, "/api/v1/access-requests", s.listAccessRequests, true)
	s.route(http.MethodPost, "/api/v1/access-requests/:id/approve", s.approveAccess, true)
	s.route(http.MethodPost, "/api/v1/access-requests/:id/deny", s.denyAccess, true)
	s.route(http.MethodGet, "/api/v1/access", s.whoCanReach, true)
	s.route(http.MethodGet, "/api/v1/tunnels/:id/activity", s.tunnelActivity, true)

	// A node enrollment token may call this route and no other.
	s.e.Add(http.MethodPost, "/api/v1/nodes", s.enrollNode, s.authenticateEnrollment)
	s.routes["/api/v1/nodes"] = true
	s.route(http.MethodGet, "/api/v1/nodes", s.listNodes, true)
	s.route(http.MethodGet, "/api/v1/nodes/:id", s.getNode, true)
	s.route(http.MethodPost, "/api/v1/nodes/:id/drain", s.drainNode, true)
	s.route(http.MethodDelete, "/api/v1/nodes/:id", s.removeNode, true)
	s.route(http.MethodPost, "/api/v1/nodes/enrollment-tokens", s.issueEnrollmentToken, true)
	s.route(http.MethodGet, "/api/v1/nodes/enrollment-tokens", s.listEnrollmentTokens, true)
	s.route(http.MethodGet, "/api/v1/nodes/enrollment-tokens/:id", s.getEnrollmentToken, true)
	s.route(http.MethodDelete, "/api/v1/nodes/enrollment-tokens/:id", s.revokeEnrollmentToken, true)

	s.route(http.MethodPost, "/api/v1/role-assignments", s.assignRole, true)
	s.route(http.MethodGet, "/api/v1/role-assignments", s.listRoles, true)
	s.route(http.MethodDelete, "/api/v1/role-assignments/:user_id/:role", s.unassignRole, true)
	s.route(http.MethodDelete, "/api/v1/users/:user_id", s.deleteUser, true)

	// Public: a witness, an auditor and a node (before and after it enrolls, holding no user's
	// token) read the log's description; nothing in it is secret.
	s.route(http.MethodGet, "/api/v1/log", s.logInfo, false)
	s.route(http.MethodGet, "/api/v1/keys", s.listKeys, true)

	// Public: logging in is how a user gets a token. The exchange verifies the provider's ID
	// token itself.
	s.route(http.MethodGet, "/api/v1/auth/oidc", s.oidcSettings, false)
	s.route(http.MethodPost, "/api/v1/auth/oidc/token", s.oidcLogin, false)
	s.route(http.MethodGet, BrowserLoginPath, s.browserLogin, false)
	s.route(http.MethodGet, BrowserCallbackPath, s.browserCallback, false)
	s.route(http.MethodPost, BrowserLogoutPath, s.browserLogout, false)
	s.route(http.MethodPost, "/api/v1/keys/rotations", s.rotateKey, true)

	s.route(http.MethodGet, "/api/v1/audit", s.searchAudit, true)
	s.route(http.MethodPost, "/api/v1/subjects/:id/erase", s.eraseSubject, true)
	s.route(http.MethodGet, "/api/v1/reports", s.listReports, true)
	s.route(http.MethodGet, "/api/v1/reports/:report", s.getReport, true)
	s.route(http.MethodPost, "/api/v1/report-schedules", s.createReportSchedule, true)
	s.route(http.MethodGet, "/api/v1/report-schedules", s.listReportSchedules, true)
	s.route(http.MethodGet, "/api/v1/report-schedules/:id", s.getReportSchedule, true)
	s.route(http.MethodPatch, "/api/v1/report-schedules/:id", s.updateReportSchedule, true)
	s.route(http.MethodDelete, "/api/v1/report-schedules/:id", s.deleteReportSchedule, true)
	s.route(http.MethodPost, "/api/v1/report-schedules/:id/pause", s.pauseReportSchedule, true)
	s.route(http.MethodPost, "/api/v1/report-schedules/:id/resume", s.resumeReportSchedule, true)

	s.route(http.MethodPost, "/api/v1/exports", s.createExport, true)
	s.route(http.MethodGet, "/api/v1/exports", s.listExports, true)
	s.route(http.MethodGet, "/api/v1/exports/:id", s.getExport, true)
	s.route(http.MethodGet, "/api/v1/exports/:id/bundle", s.downloadExport, true)

	s.route(http.MethodPost, "/api/v1/siem/sinks", s.createSIEMSink, true)
	s.route(http.MethodGet, "/api/v1/siem/sinks", s.listSIEMSinks, true)
	s.route(http.MethodGet, "/api/v1/siem/sinks/:id", s.getSIEMSink, true)
	s.route(http.MethodPut, "/api/v1/siem/sinks/:id", s.updateSIEMSink, true)
	s.route(http.MethodDelete, "/api/v1/siem/sinks/:id", s.removeSIEMSink, true)
	s.route(http.MethodPost, "/api/v1/siem/sinks/:id/skips", s.skipSIEMDelivery, true)

	s.route(http.MethodPost, "/api/v1/webhooks", s.createWebhook, true)
	s.route(http.MethodGet, "/api/v1/webhooks", s.listWebhooks, true)
	s.route(http.MethodGet, "/api/v1/webhooks/:id", s.getWebhook, true)
	s.route(http.MethodPut, "/api/v1/webhooks/:id", s.updateWebhook, true)
	s.route(http.MethodDelete, "/api/v1/webhooks/:id", s.deleteWebhook, true)
	s.route(http.MethodPost, "/api/v1/webhooks/:id/rotate-secret", s.rotateWebhookSecret, true)
	s.route(http.MethodGet, "/api/v1/notifications/stream", s.notificationStream, true)

	s.route(http.MethodGet, "/api/v1/analytics/usage", s.usage, true)
	s.route(http.MethodGet, "/api/v1/analytics/capacity", s.capacity, true)
	s.route(http.MethodGet, "/api/v1/analytics/forecast", s.forecastUsage, true)
	s.route(http.MethodGet, "/api/v1/analytics/chargeback", s.chargebackStatement, true)
	s.route(http.MethodPut, "/api/v1/analytics/settings", s.setOrgSettings, true)
	s.route(http.MethodPost, "/api/v1/analytics/price-sheets", s.setPriceSheet, true)

	s.route(http.MethodGet, "/api/v1/projections", s.listProjections, true)
	s.route(http.MethodPost, "/api/v1/projections/:name/rebuild", s.rebuildProjection, true)
}

// observe is the outer middleware: request and correlation ids, the body limit, panics, and one
// log line and metric sample per request. Errors are answered here (through handleError) so that
// the logged status is the one sent.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		req := c.Request()
		ids := requestIDs{request: clientID(req.Header.Get(HeaderRequestID)), correlation: clientID(req.Header.Get(HeaderCorrelationID))}
		c.Set(requestIDsKey, ids)
		h := c.Response().Header()
		h.Set(HeaderRequestID, ids.request)
		h.Set(HeaderCorrelationID, ids.correlation)
		s.inflight.Inc()
		defer s.inflight.Dec()

		var err error
		if req.ContentLength > s.cfg.MaxBodyBytes {
			err = &requestError{kind: ErrBodyTooLarge, detail: fmt.Sprintf("the body is larger than %d bytes", s.cfg.MaxBodyBytes)}
		} else {
			req.Body = http.MaxBytesReader(c.Response(), req.Body, s.cfg.MaxBodyBytes)
			err = s.serve(next, c)
		}
		if err != nil {
			c.Error(err)
		}

		route := c.Path()
		if !s.routes[route] {
			route = "unmatched"
		}
		status := c.Response().Status
		elapsed := time.Since(start)
		s.requests.WithLabelValues(req.Method, route, strconv.Itoa(status)).Inc()
		s.duration.WithLabelValues(req.Method, route).Observe(elapsed.Seconds())
		level := slog.LevelInfo
		switch {
		case route == "/healthz" || route == "/readyz" || route == "/metrics":
			level = slog.LevelDebug
		case route == "/api/v1/log" && req.Method == http.MethodGet && status < 400:
			level = slog.LevelDebug // every node asks every few seconds how large the log is
		case status >= 500:
			level = slog.LevelWarn
		}
		if s.log.Enabled(req.Context(), level) {
			s.log.Log(req.Context(), level, "http request", "method", req.Method, "route", route, "path", req.URL.Path, "status", status,
				"duration_ms", float64(elapsed.Microseconds())/1000, "bytes_out", c.Response().Size, "request_id", ids.request,
				"correlation_id", ids.correlation, "actor", actorOf(c).ID, "client_ip", c.RealIP())
		}
		return nil
	}
}

// serve runs the handler, turning a panic into an error (a 500 for this request only).
func (s *Server) serve(next echo.HandlerFunc, c echo.Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if r == http.ErrAbortHandler {
				panic(r)
			}
			err = fmt.Errorf("api: panic: %v", r)
		}
	}()
	return next(c)
}

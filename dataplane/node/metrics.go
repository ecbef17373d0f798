package node

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Error classes of ingress requests, shared by the metrics and the usage windows.
const (
	ClassAgentAbsent     = "agent_absent"    // no agent holds the tunnel on this node
	ClassUpstream        = "upstream"        // the agent, its upstream or the tunnel failed
	ClassTimeout         = "timeout"         // the upstream did not answer in time
	ClassLimit           = "limit"           // request body too large
	ClassUnauthenticated = "unauthenticated" // no or invalid user token
	ClassForbidden       = "forbidden"       // valid token, tunnel not allowed
	ClassAuthUnavailable = "auth_unavailable"
	ClassCanceled        = "canceled" // the caller went away first
	ClassStatus5xx       = "status_5xx"
)

type metrics struct {
	agents          prometheus.Gauge
	handshakeFails  *prometheus.CounterVec
	disconnects     prometheus.Counter
	requests        *prometheus.CounterVec
	errors          *prometheus.CounterVec
	duration        prometheus.Histogram
	ingressBytesIn  prometheus.Counter
	ingressBytesOut prometheus.Counter
	refused         *prometheus.CounterVec
	unsolicited     prometheus.Counter
	usageOverflow   prometheus.Counter
	callsCut        *prometheus.CounterVec
	failoverWaiting prometheus.Gauge
	failoverWaits   *prometheus.CounterVec
	failoverRetries prometheus.Counter
	routes          prometheus.Gauge
	routesDropped   prometheus.Counter
	forwardedCalls  prometheus.Counter
	peerDials       *prometheus.CounterVec
	peerRefused     *prometheus.CounterVec
	peerCalls       *prometheus.CounterVec
	live            prometheus.Collector
}

func newMetrics(n *Node) *metrics {
	m := &metrics{
		agents: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tunnelplane_node_agents_connected", Help: "Agents holding a tunnel on this node.",
		}),
		handshakeFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tunnelplane_node_agent_handshake_failures_total", Help: "Agent connections refused before holding a tunnel, by reason.",
		}, []string{"reason"}),
		disconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tunnelplane_node_agent_disconnects_total", Help: "Agent sessions that ended.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tunnelplane_node_ingress_requests_total", Help: "Ingress requests routed to a tunnel, by status class.",
		}, []string{"code"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tunnelplane_node_ingress_errors_total", Help: "Failed ingress requests by error class.",
		}, []string{"class"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tunnelplane_node_ingress_request_duration_seconds",
			Help:    "Time from request to response headers (streams last longer; this is time to first byte).",
			Buckets: []float64{.001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		ingressBytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tunnelplane_node_ingress_bytes_total", Help: "Body bytes through the ingress.", ConstLabels: prometheus.Labels{"direction": "request"},
		}),
		ingressBytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tunnelplane_node_ingress_bytes_total", Help: "Body bytes through the ingress.", ConstLabels: prometheus.Labels{"direction": "response"},
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tunnelplane_node_ingress_refused_total",
			Help: "Ingress requests and connections refused before reaching a tenant's tunnel (not in any tenant's usage), by reason.",
		}, []string{"reason"}),
		unsolicited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tunnelplane_node_unsolicited_upstream_bytes_total",
			Help: "Idle pooled tunnel connections retired because the upstream sent bytes nobody asked for.",
		}),
		usageOverflow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tunnelplane_node_usage_overflow_calls_total",
			Help: "Calls counted in their tunnel's overflow usage account: their caller came past the bound on distinct callers per usage window (UsageMaxCallers).",
		}),
		callsCut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tunnelplane_node_ingress_calls_cut_total",
			Help: "Calls in flight cut because their caller's access was withdrawn (a grant or role withdrawn, a key revoked, an expiry), by kind: waiting for the response header, streaming a response, a WebSocket.",
		}, []string{"kind"}),
		failoverWaiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tunnelplane_node_failover_waiting_calls",
			Help: "Calls waiting for an agent of their tunnel to connect to this node (FailoverWait).",
		}),
		failoverWaits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tunnelplane_node_failover_waits_total",
			Help: "Waits of calls for an agent of their tunnel, by outcome: served (an agent came), timeout (503 agent-absent), canceled (the caller left), queue_full (503 at once: MaxQueuedPerTunnel were waiting), draining (the node began to drain).",
		}, []string{"outcome"}),
		failoverRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tunnelplane_node_failover_retries_total",
			Help: "Calls that failed before any byte of theirs reached an agent because its session was going away, and went to another session.",
		}),
		routes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tunnelplane_node_peer_routes",
			Help: "Entries of the route table naming another node that holds an agent of a tunnel.",
		}),
		routesDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tunnelplane_node_peer_routes_dropped_total",
			Help: "Route table entries dropped because the table was full (per tunnel or in all).",
		}),
		forwardedCalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tunnelplane_node_forwarded_calls_total",
			Help: "Calls this node took and forwarded to another node holding their tunnel's agent.",
		}),
		peerDials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tunnelplane_node_peer_dials_total",
			Help: "Connections this node opened to peer nodes, by result (connected, failed).",
		}, []string{"result"}),
		peerRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tunnelplane_node_peer_refused_total",
			Help: "Node-to-node connections refused, by reason: not_enrolled (a node logging in here without a key in force), host_key (a peer dialled here did not prove the key of the node its route names).",
		}, []string{"reason"}),
		peerCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tunnelplane_node_peer_calls_total",
			Help: "Connections of calls other nodes forwarded here, by outcome: served (handed to the local agent), no_agent, unreachable (the agent could not reach its upstream), refused.",
		}, []string{"outcome"}),
	}
	m.live = &liveBytes{n: n, desc: prometheus.NewDesc("tunnelplane_node_agent_bytes_total",
		"WebSocket payload bytes exchanged with agents.", []string{"direction"}, nil)}
	return m
}

func (m *metrics) register(r prometheus.Registerer) error {
	if r == nil {
		return nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.agents, m.handshakeFails, m.disconnects, m.requests, m.errors, m.duration,
		m.ingressBytesIn, m.ingressBytesOut, m.refused, m.unsolicited, m.usageOverflow, m.callsCut,
		m.failoverWaiting, m.failoverWaits, m.failoverRetries, m.live,
		m.routes, m.routesDropped, m.forwardedCalls, m.peerDials, m.peerRefused, m.peerCalls} {
		if err := r.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	return nil
}

// liveBytes reports agent bytes as the closed sessions' total plus the live sessions' counters,
// which the WebSocket connections keep anyway: nothing is added per message.
type liveBytes struct {
	n    *Node
	desc *prometheus.Desc
}

func (l *liveBytes) Describe(ch chan<- *prometheus.Desc) { ch <- l.desc }

func (l *liveBytes) Collect(ch chan<- prometheus.Metric) {
	in, out := l.n.closedBytesIn.Load(), l.n.closedBytesOut.Load()
	l.n.mu.RLock()
	for s := range l.n.sessions {
		in += s.conn.BytesRead()
		out += s.conn.BytesWritten()
	}
	l.n.mu.RUnlock()
	ch <- prometheus.MustNewConstMetric(l.desc, prometheus.CounterValue, float64(in), "from_agent")
	ch <- prometheus.MustNewConstMetric(l.desc, prometheus.CounterValue, float64(out), "to_agent")
}

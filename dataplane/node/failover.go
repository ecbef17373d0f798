package node

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/crypto/ssh"
)

// Queue during failover: a call for a tunnel that no agent session holds on this node waits
// for one, up to FailoverWait, in a bounded queue per tunnel (MaxQueuedPerTunnel). The session's
// claim of the tunnel wakes the waiters (a channel closed per claim, no polling of the
// sessions); only the caller's connection is looked at periodically (callerPollInterval), as
// fasthttp tells nobody that a caller left. A draining or stopping node queues nothing and wakes
// its waiters, who are answered at once.
//
// Never duplicated: a call goes to another session only when no byte of its request reached an
// agent channel (beforeAgent). A call one byte of which was written to a channel is answered
// with its error as it is, never sent again: the upstream may have seen it.

// Errors of the wait for a session.
var (
	errQueueFull   = errors.New("too many calls are waiting for the tunnel's agent")
	errWaitOver    = errors.New("no agent connected for the tunnel within the failover wait")
	errNodeLeaving = errors.New("the node is draining")
)

// Outcomes of a call that waited for an agent session, the label of
// tunnelplane_node_failover_waits_total.
const (
	waitServed   = "served"     // an agent session took the tunnel and the call went to it
	waitTimeout  = "timeout"    // FailoverWait ended first: 503 agent-absent
	waitCanceled = "canceled"   // the caller left while it waited
	waitFull     = "queue_full" // MaxQueuedPerTunnel calls were waiting: 503 at once
	waitDrained  = "draining"   // the node began to drain or stop while it waited
)

// waitQueue holds the calls waiting for an agent session of one tunnel (under Node.mu). It
// exists while a call waits in it.
type waitQueue struct {
	waiting int
	wake    chan struct{} // closed (and replaced) when a session takes the tunnel or the node drains
}

// wakeLocked wakes every call waiting for tunnelID (under n.mu).
func (n *Node) wakeLocked(tunnelID string) {
	if q := n.queues[tunnelID]; q != nil {
		close(q.wake)
		q.wake = make(chan struct{})
	}
}

// wakeAllLocked wakes every waiting call (under n.mu): the node drains or stops.
func (n *Node) wakeAllLocked() {
	for id := range n.queues {
		n.wakeLocked(id)
	}
}

// EndWaits answers the calls waiting for an agent at once (503 agent-absent), and from now on
// no call waits: the node is stopping, and its server's shutdown must not wait for them. Drain
// and Stop do it too.
func (n *Node) EndWaits() {
	n.mu.Lock()
	n.noWaits = true
	n.wakeAllLocked()
	n.mu.Unlock()
}

// holdSession finds the agent session that carries rs's call and counts the call in flight on
// it (rs.sess). avoid is a session the call failed on before any byte reached the agent: it is
// going away, the call waits for another. Without a usable session the call waits (FailoverWait,
// bounded per tunnel) until one takes the tunnel, the wait ends, the node drains or the caller
// leaves. Errors: errTunnelBusy, errQueueFull, errWaitOver, errNodeLeaving, errCallerGone, or
// errAgentGone when the call does not wait (FailoverWait negative, a preflight).
func (n *Node) holdSession(ctx *fasthttp.RequestCtx, rs *reqState, avoid *session) (err error) {
	id := rs.route.TunnelID
	var q *waitQueue // the queue the call waits in, while it does
	queued := false  // the call waited, or the queue was full
	var timer *time.Timer
	var poll *time.Ticker
	defer func() {
		if timer != nil {
			timer.Stop()
			poll.Stop()
		}
		if q != nil {
			n.leaveQueue(id, q)
		}
		if queued {
			outcome := waitServed
			switch {
			case errors.Is(err, errWaitOver):
				outcome = waitTimeout
			case errors.Is(err, errCallerGone):
				outcome = waitCanceled
			case errors.Is(err, errNodeLeaving):
				outcome = waitDrained
			case errors.Is(err, errQueueFull):
				outcome = waitFull
			case err != nil:
				return // busy: counted where calls over MaxCallsPerTunnel are
			}
			n.metrics.failoverWaits.WithLabelValues(outcome).Inc()
		}
	}()
	for {
		n.mu.Lock()
		s := n.tunnels[id]
		if s != nil && s != avoid && s.ident.OrgID == rs.route.OrgID {
			n.mu.Unlock()
			switch err := s.acquire(); {
			case err == nil:
				rs.sess = s
				return nil
			case errors.Is(err, errTunnelBusy):
				return err
			}
			avoid = s // closing since the lookup: the next claim brings another
			continue
		}
		if routes := n.routes[id]; len(routes) > 0 && !rs.forwarded && !n.draining && !n.stopped && !n.noWaits {
			// Another node holds an agent of the tunnel: the call goes there (peers.go).
			routes = slices.Clone(routes)
			gen := n.routeGen
			n.mu.Unlock()
			if avoid != nil && avoid.peer != nil && !slices.Contains(rs.avoidPeers, avoid.peer.nodeID) {
				rs.avoidPeers = append(rs.avoidPeers, avoid.peer.nodeID)
			}
			ps, err := n.peerSession(rs, routes, func() bool { return rs.callerLeft(ctx) })
			if ps != nil {
				rs.sess = ps
				return nil
			}
			if err != nil {
				return err
			}
			n.mu.Lock()
			if n.routeGen != gen || n.tunnels[id] != nil {
				n.mu.Unlock()
				continue // a route or an agent came while the node looked at the others
			}
		}
		switch {
		case n.draining || n.stopped || n.noWaits:
			n.mu.Unlock()
			if q != nil {
				return errNodeLeaving
			}
			return errAgentGone
		case n.cfg.FailoverWait < 0 || rs.preflight:
			// An anonymous preflight does not wait: callers without a credential take no place
			// in the queue of a tunnel's callers.
			n.mu.Unlock()
			return errAgentGone
		}
		now := time.Now()
		if rs.waitUntil.IsZero() {
			rs.waitUntil = now.Add(n.cfg.FailoverWait)
		}
		left := rs.waitUntil.Sub(now)
		if left <= 0 {
			n.mu.Unlock()
			return errWaitOver
		}
		if q == nil {
			q = n.queues[id]
			if q == nil {
				q = &waitQueue{wake: make(chan struct{})}
				n.queues[id] = q
			}
			if q.waiting >= n.cfg.MaxQueuedPerTunnel {
				n.mu.Unlock()
				q, queued = nil, true // refused, not in it
				return errQueueFull
			}
			q.waiting++
			queued = true
			n.metrics.failoverWaiting.Inc()
		}
		wake := q.wake
		n.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(left)
			poll = time.NewTicker(callerPollInterval)
		}
		select {
		case <-wake:
			rs.avoidPeers = nil // an agent or a route came: every peer may be tried again
		case <-timer.C:
		case <-poll.C:
			if rs.callerLeft(ctx) {
				return fmt.Errorf("%w: it left while waiting for the tunnel's agent", errCallerGone)
			}
		}
	}
}

// leaveQueue takes a call out of its tunnel's queue; the queue goes when it is empty.
func (n *Node) leaveQueue(tunnelID string, q *waitQueue) {
	n.mu.Lock()
	q.waiting--
	if q.waiting == 0 && n.queues[tunnelID] == q {
		delete(n.queues, tunnelID)
	}
	n.mu.Unlock()
	n.metrics.failoverWaiting.Dec()
}

// beforeAgent reports whether a failed attempt ended before any byte of the request reached an
// agent (reached: a channel took one, in this attempt or an earlier one), and for a reason that
// another attempt may not have: then the call may be sent again.
func beforeAgent(err error, reached bool) bool {
	if reached {
		return false
	}
	var oce *ssh.OpenChannelError
	switch {
	case errors.Is(err, errHeadersNotSent), errors.Is(err, errAgentGone), errors.Is(err, errAgentUnresponsive):
		return true
	case errors.As(err, &oce):
		// The agent refused the channel because it is stopping (or not ready): no request of this
		// call exists at the agent. Any other refusal (its upstream unreachable) is the answer.
		return oce.Reason == ssh.ResourceShortage || oce.Reason == ssh.Prohibited
	}
	return false
}

// leaving reports whether the session can take no more calls: it is closing, no longer holds
// its tunnel, or its agent refused a channel because it is going away.
func (s *session) leaving(err error) bool {
	var oce *ssh.OpenChannelError
	if errors.As(err, &oce) || errors.Is(err, errAgentGone) || errors.Is(err, errAgentUnresponsive) {
		return true
	}
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if s.peer != nil {
		return closing
	}
	return closing || s.n.tunnelSession(s.ident.TunnelID) != s
}

// endedBy is err, said to be the session's end when it ended (errAgentGone or
// errAgentUnresponsive): a call that could not be sent because its session closed.
func (s *session) endedBy(err error) error {
	s.mu.Lock()
	gone := s.goneErr
	s.mu.Unlock()
	if gone == nil || errors.Is(err, gone) {
		return err
	}
	return fmt.Errorf("%w: %w", gone, err)
}

// noSession answers a call that holdSession found no session for.
func (n *Node) noSession(ctx *fasthttp.RequestCtx, rs *reqState, err error) {
	name := rs.route.Name
	p := problem{Status: http.StatusServiceUnavailable, Tunnel: name}
	switch {
	case errors.Is(err, errTunnelBusy):
		rs.class = ClassLimit
		ctx.Response.Header.Set("Retry-After", "1")
		p.Slug, p.Title = "tunnel-busy", "Tunnel busy"
		p.Detail = "tunnel " + strconv.Quote(name) + " has " + strconv.Itoa(n.cfg.MaxCallsPerTunnel) + " calls in flight on this node; retry shortly"
	case errors.Is(err, errQueueFull):
		rs.class = ClassLimit
		ctx.Response.Header.Set("Retry-After", "2")
		p.Slug, p.Title = "failover-queue-full", "Too many calls waiting for the tunnel's agent"
		p.Detail = "tunnel " + strconv.Quote(name) + " has no agent on this node and " + strconv.Itoa(n.cfg.MaxQueuedPerTunnel) +
			" calls are waiting for one; retry shortly"
	case errors.Is(err, errCallerGone):
		// Nobody reads the answer; the record says the caller left.
		rs.class, rs.status = ClassCanceled, 499
		ctx.SetConnectionClose()
		writeProblem(ctx, problem{Status: http.StatusServiceUnavailable, Slug: "agent-absent", Title: "Tunnel offline", Tunnel: name})
		return
	default:
		rs.class = ClassAgentAbsent
		ctx.Response.Header.Set("Retry-After", "2")
		p.Slug, p.Title = "agent-absent", "Tunnel offline"
		p.Detail = "no agent is connected for tunnel " + strconv.Quote(name) + " on this node"
		if errors.Is(err, errWaitOver) {
			p.Detail += " (waited " + n.cfg.FailoverWait.String() + " for one)"
		}
	}
	rs.status = p.Status
	writeProblem(ctx, p)
}

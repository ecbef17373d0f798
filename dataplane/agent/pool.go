package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/domain"
)

// An agent holds Connections nodes at once. Each connection is a slot: it takes the first free
// node in order of preference that is not backing off, keeps it until it is lost, then takes
// the next. What a slot decides (failover, failback) is reported through a connection the agent
// holds, the same slot's next one or another's, so the log learns it even when the node that
// was lost cannot say anything.

// poolNode is one node the agent was given.
type poolNode struct {
	url      *url.URL
	rank     int    // its place in the order of preference
	id       string // as the node named itself ("" until reached)
	slot     int    // the slot holding (or connecting to) it; -1 none
	failures int    // attempts failed in a row
	retryAt  time.Time
	draining bool     // it said it drains, and the connection left behind has not ended yet
	explicit bool     // given (NodeURLs), not discovered
	gone     bool     // discovery no longer lists it: taken no more
	pins     []string // host keys it may have (discovered: its own; nil: every configured pin)
	// reachableSince: the failback probe has reached it continuously since then (zero: not).
	reachableSince time.Time
}

func (n *poolNode) name() string {
	if n.id != "" {
		return n.id + " (" + n.url.Redacted() + ")"
	}
	return n.url.Redacted()
}

// maxQueuedEvents bounds the reports waiting for a connection.
const maxQueuedEvents = 32

type pool struct {
	a     *agent
	mu    sync.Mutex
	nodes []*poolNode
	live  map[int]*conn // by slot
	wake  chan struct{} // closed and replaced when a node is released
	// queued are reports no connection could take yet.
	queued   []node.AgentEvent
	fatal    error
	cancel   context.CancelFunc
	failback []chan *poolNode // by slot: a preferred node claimed for it
}

func (a *agent) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	slots := a.cfg.Connections
	if a.discoverURL == nil {
		slots = min(slots, len(a.nodes))
	}
	p := &pool{a: a, live: map[int]*conn{}, wake: make(chan struct{}), cancel: cancel, failback: make([]chan *poolNode, slots)}
	for i, u := range a.nodes {
		p.nodes = append(p.nodes, &poolNode{url: u, rank: i, slot: -1, explicit: true})
	}
	var wg sync.WaitGroup
	if a.discoverURL != nil {
		if err := p.firstDiscovery(ctx); err != nil {
			a.state(StateStopped, "stopped: not retrying")
			return err
		}
		if ctx.Err() != nil {
			a.state(StateStopped, "stopped")
			return nil
		}
		wg.Go(func() { p.discoverLoop(ctx) })
	}
	for i := range slots {
		p.failback[i] = make(chan *poolNode, 1)
		wg.Go(func() { p.slot(ctx, i) })
	}
	if slots < len(a.nodes) || a.discoverURL != nil {
		wg.Go(func() { p.probe(ctx) })
	}
	wg.Wait()
	a.behind.Wait()
	p.mu.Lock()
	fatal := p.fatal
	p.mu.Unlock()
	if fatal != nil {
		a.state(StateStopped, "stopped: not retrying")
		return fatal
	}
	a.state(StateStopped, "stopped")
	return nil
}

// claim takes the first free node in order of preference that is not backing off for slot i,
// waiting for one; nil once ctx ends.
func (p *pool) claim(ctx context.Context, i int) *poolNode {
	for {
		p.mu.Lock()
		now := time.Now()
		var soonest time.Time
		for _, n := range p.nodes {
			if n.slot != -1 || n.draining || n.gone {
				continue
			}
			if n.retryAt.After(now) {
				if soonest.IsZero() || n.retryAt.Before(soonest) {
					soonest = n.retryAt
				}
				continue
			}
			n.slot = i
			p.mu.Unlock()
			return n
		}
		wake := p.wake
		p.mu.Unlock()
		var due <-chan time.Time
		if !soonest.IsZero() {
			t := time.NewTimer(time.Until(soonest))
			defer t.Stop()
			due = t.C
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-due:
		}
	}
}

// release frees n, not to be taken again before retryAt.
func (p *pool) release(n *poolNode, retryAt time.Time) {
	p.mu.Lock()
	n.slot, n.retryAt, n.reachableSince = -1, retryAt, time.Time{}
	close(p.wake)
	p.wake = make(chan struct{})
	p.mu.Unlock()
}

// holding lists the nodes the slots hold, for the state lines.
func (p *pool) holding() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var names []string
	for _, n := range p.nodes {
		if c := p.live[n.slot]; n.slot != -1 && c != nil && c.url == n.url {
			names = append(names, n.name())
		}
	}
	if len(names) == 0 {
		return "no node"
	}
	return strings.Join(names, ", ")
}

// lostNode is what a slot left, until it holds a node again.
type lostNode struct {
	node  *poolNode
	cause string
	at    time.Time
}

func (p *pool) slot(ctx context.Context, i int) {
	a := p.a
	var lost *lostNode
	for ctx.Err() == nil {
		n := p.claim(ctx, i)
		if n == nil {
			return
		}
		a.state(StateConnecting, "connecting to "+n.url.String())
		start := time.Now()
		c, err := a.connect(ctx, n.url, p.pinsOf(n))
		if err != nil {
			if ctx.Err() != nil {
				p.release(n, time.Time{})
				return
			}
			if errors.Is(err, ErrPermanent) || errors.Is(err, ErrNoUpstream) {
				p.stop(err)
				p.release(n, time.Time{})
				return
			}
			p.mu.Lock()
			delay := a.backoff(n.failures)
			n.failures++
			p.mu.Unlock()
			p.release(n, time.Now().Add(delay))
			a.report(StateDisconnected, "disconnected: "+err.Error(), slog.LevelWarn, "connection failed", "node_url", n.url.Redacted(), "error", err)
			a.state(StateRetrying, "retrying in "+delay.Round(time.Millisecond).String())
			continue
		}
		p.mu.Lock()
		n.failures, n.id = 0, c.nodeID
		p.live[i] = c
		p.mu.Unlock()
		from := "the tunnel's upstream"
		if a.cfg.Upstream != "" {
			from = "its own upstream"
		}
		a.report(StateConnected, fmt.Sprintf("connected to %s in %v (%s, %s, %s), forwarding to %s (%s); holding %s", n.url, time.Since(start).Round(time.Millisecond),
			c.protocol, c.algs.KeyExchange, c.algs.Write.Cipher, c.upURL, from, p.holding()),
			slog.LevelInfo, "connected", "node_url", n.url.Redacted(), "node_id", c.nodeID, "upstream", c.upURL, "protocol", c.protocol,
			"kex", c.algs.KeyExchange, "cipher", c.algs.Write.Cipher, "connect_ms", time.Since(start).Milliseconds())
		if lost != nil {
			c.sendEvent(node.AgentEvent{Type: domain.TypeFailoverCompleted, Cause: lost.cause, FromNodeID: lost.node.id,
				DurationMS: time.Since(lost.at).Milliseconds()})
			a.log.Info("failover completed", "from", lost.node.name(), "to", n.name(), "cause", lost.cause, "took", time.Since(lost.at).Round(time.Millisecond))
			lost = nil
		}
		p.flush(c)
		lost = p.serve(ctx, i, n, c)
		// A failback the probe claimed for this slot before it let go is void.
		select {
		case to := <-p.failback[i]:
			p.release(to, time.Time{})
		default:
		}
	}
}

// serve keeps slot i on node n until the connection is lost (it returns what was lost), the
// node drains (the connection finishes its calls behind, and the slot moves on at once), a
// failback moves the slot to a preferred node, or ctx ends (nil).
func (p *pool) serve(ctx context.Context, i int, n *poolNode, c *conn) *lostNode {
	a := p.a
	ended := c.start()
	for {
		select {
		case <-ctx.Done():
			c.shutdown(ended)
			c.finish()
			p.drop(i, c)
			p.release(n, time.Time{})
			return nil
		case <-ended:
			reason := c.finish()
			p.drop(i, c)
			if ctx.Err() != nil {
				p.release(n, time.Time{})
				return nil
			}
			a.report(StateDisconnected, "disconnected: "+reason, slog.LevelWarn, "disconnected", "node_url", n.url.Redacted(), "reason", reason)
			retry := time.Now().Add(a.backoff(0))
			if reason == "replaced" {
				// Another agent holds the tunnel now; reconnecting at once would only take it
				// back and start a tug of war.
				p.release(n, time.Now().Add(a.cfg.MaxBackoff))
				return nil
			}
			p.release(n, retry)
			return p.lost(i, n, c.cause())
		case <-c.draining:
			// The node routes nothing new here and ends the session once its calls are done:
			// let them finish behind, and hold another node meanwhile.
			p.drop(i, c)
			p.mu.Lock()
			n.draining = true
			p.mu.Unlock()
			p.leaveBehind(ctx, c, ended, false, func() {
				// The node ended the session: it may be back soon (a restart), or refuse.
				p.mu.Lock()
				n.draining = false
				p.mu.Unlock()
				p.release(n, time.Now().Add(a.backoff(0)))
			})
			a.report(StateDisconnected, "disconnected: "+node.DrainReason, slog.LevelInfo, "node draining", "node_url", n.url.Redacted())
			p.release(n, time.Time{})
			return p.lost(i, n, domain.CauseNodeDrain)
		case to := <-p.failback[i]:
			p.mu.Lock()
			healthy := time.Since(to.reachableSince)
			p.mu.Unlock()
			nc, err := a.connect(ctx, to.url, p.pinsOf(to))
			if err != nil {
				a.log.Info("failback refused", "node_url", to.url.Redacted(), "error", err)
				p.mu.Lock()
				to.failures++
				p.mu.Unlock()
				p.release(to, time.Now().Add(a.backoff(to.failures)))
				continue
			}
			// The preferred node is held: leave this one gently (its calls finish first).
			p.drop(i, c)
			p.leaveBehind(ctx, c, ended, true, nil)
			p.mu.Lock()
			to.failures, to.id = 0, nc.nodeID
			p.live[i] = nc
			p.mu.Unlock()
			p.release(n, time.Time{})
			nc.sendEvent(node.AgentEvent{Type: domain.TypeFailbackCompleted, FromNodeID: n.id, HealthyForMS: healthy.Milliseconds()})
			a.report(StateConnected, fmt.Sprintf("connected to %s (failback from %s); holding %s", to.url, n.name(), p.holding()),
				slog.LevelInfo, "failback", "from", n.name(), "to", to.name())
			p.flush(nc)
			c, n, ended = nc, to, nc.start()
		}
	}
}

// stop ends the agent for err, which Run returns (the first one wins).
func (p *pool) stop(err error) {
	p.mu.Lock()
	if p.fatal == nil {
		p.fatal = err // said once, by whoever receives the error
	}
	p.mu.Unlock()
	p.cancel()
}

// pinsOf are the host keys n may have.
func (p *pool) pinsOf(n *poolNode) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n.pins != nil {
		return n.pins
	}
	return p.a.cfg.pins()
}

// firstDiscovery asks the control plane for the nodes before any connection, retrying what may
// pass; with nodes given as well it does not wait for an answer longer than one attempt.
func (p *pool) firstDiscovery(ctx context.Context) error {
	a := p.a
	for failures := 0; ; failures++ {
		list, err := a.discover(ctx)
		if err == nil {
			p.merge(list)
			return nil
		}
		if errors.Is(err, ErrPermanent) {
			return err
		}
		a.report(StateDisconnected, "disconnected: "+err.Error(), slog.LevelWarn, "node discovery failed", "error", err)
		if len(a.nodes) > 0 {
			return nil // the given nodes meanwhile; discoverLoop asks again
		}
		delay := a.backoff(failures)
		a.state(StateRetrying, "retrying in "+delay.Round(time.Millisecond).String())
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// merge takes a discovery answer: discovered nodes follow the given ones in the answer's order,
// with the host key it names; a node it no longer lists is taken no more (a connection to it
// stays until lost).
func (p *pool) merge(list []discovered) {
	p.mu.Lock()
	defer p.mu.Unlock()
	byURL := map[string]*poolNode{}
	for _, n := range p.nodes {
		byURL[n.url.String()] = n
	}
	listed := map[*poolNode]bool{}
	for i, d := range list {
		u, err := nodeURL(d.AgentURL)
		if err != nil {
			continue
		}
		n := byURL[u.String()]
		if n == nil {
			n = &poolNode{url: u, slot: -1}
			byURL[u.String()] = n
			p.nodes = append(p.nodes, n)
		}
		if !n.explicit {
			n.rank, n.pins, n.gone, n.id = len(p.a.nodes)+i, []string{d.Fingerprint}, false, d.ID
		}
		listed[n] = true
	}
	for _, n := range p.nodes {
		if !n.explicit && !listed[n] {
			n.gone = true
		}
	}
	slices.SortStableFunc(p.nodes, func(a, b *poolNode) int {
		if a.gone != b.gone {
			if a.gone {
				return 1
			}
			return -1
		}
		return a.rank - b.rank
	})
	close(p.wake)
	p.wake = make(chan struct{})
}

// drop forgets slot i's connection c.
func (p *pool) drop(i int, c *conn) {
	p.mu.Lock()
	if p.live[i] == c {
		delete(p.live, i)
	}
	p.mu.Unlock()
}

// leaveBehind lets c finish its calls while the slot moves on: at once when gently (a failback:
// the node is asked to drain the session), else when the node ends it (it drains), or when ctx
// ends (shutdown).
func (p *pool) leaveBehind(ctx context.Context, c *conn, ended <-chan struct{}, gently bool, then func()) {
	p.a.behind.Go(func() {
		if then != nil {
			defer then()
		}
		if gently {
			c.shutdown(ended)
		} else {
			select {
			case <-ended:
			case <-ctx.Done():
				c.shutdown(ended)
			}
		}
		c.finish()
	})
}

// lost reports that slot i left n for cause: through another connection the agent holds, or,
// when it holds none, through the next one (queued).
func (p *pool) lost(i int, n *poolNode, cause string) *lostNode {
	l := &lostNode{node: n, cause: cause, at: time.Now()}
	ev := node.AgentEvent{Type: domain.TypeFailoverStarted, Cause: cause, FromNodeID: n.id, DetectedAt: l.at.UTC()}
	p.mu.Lock()
	var via *conn
	for s, c := range p.live {
		if s != i {
			via = c
			break
		}
	}
	p.mu.Unlock()
	// Not on the slot's time: a connection that is itself failing may take its keepalive
	// timeout to answer.
	p.a.behind.Go(func() {
		if via == nil || !via.sendEvent(ev) {
			p.queue(ev)
		}
	})
	p.a.log.Warn("failover started", "from", n.name(), "cause", cause)
	return l
}

func (p *pool) queue(ev node.AgentEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queued) == maxQueuedEvents {
		p.queued = p.queued[1:]
	}
	p.queued = append(p.queued, ev)
}

// flush sends the queued reports through c.
func (p *pool) flush(c *conn) {
	p.mu.Lock()
	q := p.queued
	p.queued = nil
	p.mu.Unlock()
	for k, ev := range q {
		if !c.sendEvent(ev) {
			p.mu.Lock()
			p.queued = append(q[k:], p.queued...)
			p.mu.Unlock()
			return
		}
	}
}

// probe watches the nodes preferred over one a slot holds, and once such a node has been
// reachable (a TCP connection to it succeeds) for FailbackDelay, claims it for the slot holding
// the least preferred node, which then moves there.
func (p *pool) probe(ctx context.Context) {
	a := p.a
	interval := min(max(a.cfg.FailbackDelay/4, 50*time.Millisecond), 5*time.Second)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, n := range p.candidates() {
			reachable := dialable(ctx, n.url, interval)
			p.mu.Lock()
			if n.slot != -1 {
				p.mu.Unlock()
				continue
			}
			switch {
			case !reachable:
				n.reachableSince = time.Time{}
			case n.reachableSince.IsZero():
				n.reachableSince = time.Now()
			case time.Since(n.reachableSince) >= a.cfg.FailbackDelay:
				if worst := p.worstSlot(n.rank); worst >= 0 {
					n.slot = worst
					p.failback[worst] <- n
				}
			}
			p.mu.Unlock()
		}
	}
}

// candidates are the free nodes preferred over the least preferred node a slot holds.
func (p *pool) candidates() []*poolNode {
	p.mu.Lock()
	defer p.mu.Unlock()
	worst := -1
	for _, n := range p.nodes {
		if n.slot != -1 && p.live[n.slot] != nil {
			worst = max(worst, n.rank)
		}
	}
	var out []*poolNode
	for _, n := range p.nodes {
		if n.slot == -1 && n.rank < worst && !n.gone {
			out = append(out, n)
		}
	}
	return out
}

// worstSlot is the slot holding the least preferred node below rank, with no failback pending
// (-1 none). Called with p.mu held.
func (p *pool) worstSlot(rank int) int {
	slot, worst := -1, rank
	for _, n := range p.nodes {
		if n.slot != -1 && n.rank > worst && p.live[n.slot] != nil && p.live[n.slot].url == n.url && len(p.failback[n.slot]) == 0 {
			slot, worst = n.slot, n.rank
		}
	}
	return slot
}

// dialable tells whether a TCP connection to the node's address succeeds within timeout.
func dialable(ctx context.Context, u *url.URL, timeout time.Duration) bool {
	host := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "wss" {
			port = "443"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", host)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// cause says why a connection that ended was lost, as a failover cause.
func (c *conn) cause() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case strings.HasPrefix(c.ownReason, "keepalive timeout"):
		return domain.CauseKeepaliveTimeout
	case c.nodeReason == node.DrainReason:
		return domain.CauseNodeDrain
	}
	return domain.CauseNodeLost
}

// sendEvent reports ev through this connection; false when the node did not take it (an older
// node, or the connection failing).
func (c *conn) sendEvent(ev node.AgentEvent) bool {
	if c.protocol != node.ProtocolV2 {
		return false
	}
	js, _ := json.Marshal(ev)
	ok, _, err := c.sc.SendRequest(node.RequestAgentEvent, true, ssh.Marshal(node.JSONPayload{JSON: string(js)}))
	if err != nil || !ok {
		c.a.log.Debug("agent event not taken", "type", ev.Type, "node_url", c.url.Redacted(), "error", err)
		return false
	}
	return true
}

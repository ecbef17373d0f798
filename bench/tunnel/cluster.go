package tunnel

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// credentials are the run's keys and tokens: the node's host key (from a seed the node child
// gets), the token key, the bench user's token and a tunnel access key for the bench tunnel.
type credentials struct {
	tokenKey    *eventstore.SigningKey
	hostSeed    []byte
	fingerprint string // of the node's host key, which agents pin
	userToken   string
	accessKey   string // the secret; the node gets its hash, as the log holds it
	// The nodes' ids and enrolled keys (seeds) for forwarding: the node holding the agent and
	// the ingress node of c64fwd.
	nodeID, ingressID     string
	nodeSeed, ingressSeed []byte
}

// peers are both nodes' enrolled public keys by id.
func (c *credentials) peers() map[string][]byte {
	return map[string][]byte{
		c.nodeID:    ed25519.NewKeyFromSeed(c.nodeSeed).Public().(ed25519.PublicKey),
		c.ingressID: ed25519.NewKeyFromSeed(c.ingressSeed).Public().(ed25519.PublicKey),
	}
}

func newCredentials() (*credentials, error) {
	tokenKey, err := eventstore.GenerateSigningKey()
	if err != nil {
		return nil, err
	}
	seed := make([]byte, ed25519.SeedSize)
	rand.Read(seed)
	hostKey, err := ssh.NewSignerFromKey(ed25519.NewKeyFromSeed(seed))
	if err != nil {
		return nil, err
	}
	userTok, err := token.MintUser(tokenKey, token.DefaultIssuer, benchUser, "bench", 24*time.Hour, time.Now())
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	nodeSeed, ingressSeed := make([]byte, ed25519.SeedSize), make([]byte, ed25519.SeedSize)
	rand.Read(nodeSeed)
	rand.Read(ingressSeed)
	return &credentials{tokenKey: tokenKey, hostSeed: seed, fingerprint: ssh.FingerprintSHA256(hostKey.PublicKey()), userToken: userTok,
		accessKey: domain.AccessKeyPrefix + base64.RawURLEncoding.EncodeToString(secret),
		nodeID:    uuid.Must(uuid.NewV7()).String(), ingressID: uuid.Must(uuid.NewV7()).String(), nodeSeed: nodeSeed, ingressSeed: ingressSeed}, nil
}

// agentToken is an agent token for tunnel.
func (c *credentials) agentToken(tunnel string) string {
	t, err := token.MintAgent(c.tokenKey, token.DefaultIssuer, "jti-"+tunnel, "org-bench", tunnel, time.Now().Add(24*time.Hour), time.Now())
	if err != nil {
		panic(err) // only fails for empty ids
	}
	return t
}

// cluster is the processes that live through a run: origin, node, the bench agent and two bare
// relays in a row (and later the idle agents). Load generators come and go.
type cluster struct {
	o                                   *Options
	children                            []*child // every process started, stopped in reverse order
	origin, node, agent, relayA, relayB *child
	ingress                             *child // c64fwd's node without the agent (nil: not measured)
	originAddr, nodeAddr, relaysAddr    string
	ingressAddr                         string
	loadPid                             int // of the last load generator started
}

// startCluster starts the long-lived processes and waits until each is ready.
func startCluster(ctx context.Context, o *Options, cr *credentials, progress progressFunc) (_ *cluster, err error) {
	c := &cluster{o: o}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	if c.origin, c.originAddr, err = c.startServer(ctx, RoleOrigin, spec{}); err != nil {
		return nil, err
	}
	if c.node, c.nodeAddr, err = c.startServer(ctx, RoleNode, c.nodeSpec(cr)); err != nil {
		return nil, err
	}
	if c.agent, _, err = c.startChild(ctx, RoleAgents, c.agentSpec(cr, []string{cr.agentToken("tun-bench")})); err != nil {
		return nil, err
	}
	progress("origin %s, node %s, agent connected", c.originAddr, c.nodeAddr)
	if o.runs("c64fwd") {
		sp := c.nodeSpec(cr)
		sp.NodeID, sp.PeerSeed = cr.ingressID, cr.ingressSeed
		sp.Route = &routeSpec{NodeID: cr.nodeID, URL: "ws://" + c.nodeAddr + "/v1/peer"}
		if c.ingress, c.ingressAddr, err = c.startServer(ctx, RoleNode, sp); err != nil {
			return nil, err
		}
		progress("ingress node %s (forwards to the node holding the agent)", c.ingressAddr)
	}

	// Two bare relays in a row, agent-like next to the origin and node-like next to the caller.
	var relayA string
	if c.relayA, relayA, err = c.startServer(ctx, RoleRelay, spec{Target: c.originAddr}); err != nil {
		return nil, err
	}
	if c.relayB, c.relaysAddr, err = c.startServer(ctx, RoleRelay, spec{Target: relayA}); err != nil {
		return nil, err
	}
	return c, nil
}

// nodeSpec is the node's spec (a restarted node's too).
func (c *cluster) nodeSpec(cr *credentials) spec {
	return spec{HostKeySeed: cr.hostSeed, TokenKeyID: cr.tokenKey.ID(), TokenPub: cr.tokenKey.Public(), IdleTunnels: c.o.IdleAgents,
		AccessKeyHash: domain.HashAccessKey(cr.accessKey), NodeID: cr.nodeID, PeerSeed: cr.nodeSeed, Peers: cr.peers()}
}

// agentSpec is the spec of an agents child holding a tunnel for each token.
func (c *cluster) agentSpec(cr *credentials, tokens []string) spec {
	return spec{NodeURL: "ws://" + c.nodeAddr + "/v1/agent", Fingerprint: cr.fingerprint, Upstream: "http://" + c.originAddr, Tokens: tokens}
}

// startChild starts a long-lived child and reads its first message (ready).
func (c *cluster) startChild(ctx context.Context, role string, sp spec) (*child, message, error) {
	ch, err := c.o.start(ctx, role, sp)
	if err != nil {
		return nil, message{}, err
	}
	c.children = append(c.children, ch)
	m, err := ch.next()
	return ch, m, err
}

// startServer starts a child that listens and returns its address.
func (c *cluster) startServer(ctx context.Context, role string, sp spec) (*child, string, error) {
	ch, m, err := c.startChild(ctx, role, sp)
	return ch, m.Addr, err
}

func (c *cluster) stop() {
	for _, ch := range slices.Backward(c.children) {
		ch.stop()
	}
}

// ways are the base URLs the phases measure.
func (c *cluster) ways(cr *credentials) ways {
	return ways{direct: "http://" + c.originAddr, tunnel: "http://" + c.nodeAddr + "/t/bench",
		tunnelCalls: "http://" + c.nodeAddr + "/t/bench-calls", relays: "http://" + c.relaysAddr, token: cr.userToken,
		forwarded: "http://" + c.ingressAddr + "/t/bench",
		accessKey: cr.accessKey}
}

// load runs one load generator to its end.
func (c *cluster) load(ctx context.Context, s loadSpec) (*loadResult, error) {
	ch, err := c.o.start(ctx, RoleLoad, spec{Load: &s})
	if err != nil {
		return nil, err
	}
	c.loadPid = ch.cmd.Process.Pid
	defer ch.stop()
	m, err := ch.next()
	if err != nil {
		return nil, err
	}
	return m.Load, nil
}

// warmUp runs a short load on the direct and the tunnel way (connections, pools, the auth cache).
func (c *cluster) warmUp(ctx context.Context, w ways) error {
	for _, base := range []string{w.direct, w.tunnel} {
		if _, err := c.load(ctx, loadSpec{Mode: "rps", URL: base + "/small", Token: w.token, Concurrency: 8, Duration: 300 * time.Millisecond}); err != nil {
			return fmt.Errorf("warm-up %s: %w", base, err)
		}
	}
	return nil
}

// profiled runs f with CPU profiles of node and agent when a profile dir is set.
func (c *cluster) profiled(phase string, f func() error) error {
	if c.o.ProfileDir == "" {
		return f()
	}
	os.MkdirAll(c.o.ProfileDir, 0o755)
	for _, ch := range []*child{c.node, c.agent} {
		if _, err := ch.command("profile " + filepath.Join(c.o.ProfileDir, ch.role+"-"+phase+".pprof")); err != nil {
			return err
		}
	}
	err := f()
	for _, ch := range []*child{c.node, c.agent} {
		ch.command("profile-stop")
	}
	return err
}

// hopPaths are a chunk's ways through the processes for the scheduler trace (asked for after
// the traced load, whose process is the caller).
func (c *cluster) hopPaths() map[string]hopPath {
	pid := func(ch *child) int { return ch.cmd.Process.Pid }
	return map[string]hopPath{
		"direct": {[]int{pid(c.origin), c.loadPid}, []string{"caller"}},
		"tunnel": {[]int{pid(c.origin), pid(c.agent), pid(c.node), c.loadPid}, []string{"agent", "node", "caller"}},
		"relays": {[]int{pid(c.origin), pid(c.relayA), pid(c.relayB), c.loadPid}, []string{"relay 1", "relay 2", "caller"}},
	}
}

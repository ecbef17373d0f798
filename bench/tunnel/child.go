package tunnel

import (
	"bufio"
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/dataplane/view"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/tracing"
)

// Roles a child process can play.
const (
	RoleOrigin = "origin"
	RoleNode   = "node"
	RoleAgents = "agents"
	RoleLoad   = "load"
	// RoleRelay forwards TCP connections to spec.Target with io.Copy both ways: two of them in a
	// row are the floor any two-process tunnel pays on this machine (the reference the bench
	// reports next to the tunnel).
	RoleRelay = "relay"
)

// ErrUnknownRole is returned by RunChild for a role it does not know.
var ErrUnknownRole = errors.New("tunnelbench: unknown role")

// spec is the first line a child reads on stdin.
type spec struct {
	// node
	HostKeySeed []byte `json:"host_key_seed,omitempty"`
	TokenKeyID  string `json:"token_key_id,omitempty"`
	TokenPub    []byte `json:"token_pub,omitempty"`
	IdleTunnels int    `json:"idle_tunnels,omitempty"`
	// AccessKeyHash is the hash of the bench tunnel's access key (domain.HashAccessKey).
	AccessKeyHash string `json:"access_key_hash,omitempty"`
	// ListenAddr is the node's address (a restarted node takes its predecessor's); empty: any.
	ListenAddr string `json:"listen_addr,omitempty"`
	// NodeID, PeerSeed (its enrolled key's seed) and Peers (every node's enrolled public key,
	// by id) turn forwarding on; Route names the node holding the bench tunnel's agent and its
	// peer endpoint, for the node that has none.
	NodeID   string            `json:"node_id,omitempty"`
	PeerSeed []byte            `json:"peer_seed,omitempty"`
	Peers    map[string][]byte `json:"peers,omitempty"`
	Route    *routeSpec        `json:"route,omitempty"`
	// agents
	NodeURL     string   `json:"node_url,omitempty"`
	Fingerprint string   `json:"fingerprint,omitempty"`
	Upstream    string   `json:"upstream,omitempty"`
	Tokens      []string `json:"tokens,omitempty"`
	// AgentDefaults: the agents reconnect with the agent's default backoff (500 ms to 30 s, with
	// jitter), as deployed agents do, not the bench's quick one.
	AgentDefaults bool `json:"agent_defaults,omitempty"`
	// load
	Load *loadSpec `json:"load,omitempty"`
	// relay
	Target string `json:"target,omitempty"`
}

// message is one line a child writes on stdout.
type message struct {
	Addr      string      `json:"addr,omitempty"`
	ConnectMS []float64   `json:"connect_ms,omitempty"`
	Mem       *memStats   `json:"mem,omitempty"`
	Load      *loadResult `json:"load,omitempty"`
	CPU       float64     `json:"cpu,omitempty"` // user+system seconds so far
	Calls     *callCounts `json:"calls,omitempty"`
	Sessions  int         `json:"sessions,omitempty"` // agents a node holds
	OK        bool        `json:"ok,omitempty"`
	Error     string      `json:"error,omitempty"`
}

type memStats struct {
	RSS        uint64 `json:"rss"`
	HeapInuse  uint64 `json:"heap_inuse"`
	StackInuse uint64 `json:"stack_inuse"`
	Goroutines int    `json:"goroutines"`
}

// RunChild plays one bench role: it reads its spec from the first line of stdin, reports on
// stdout as JSON lines, and (servers) runs until stdin closes. Later stdin lines are commands:
// "mem" (report memory after a GC), "profile <path>" and "profile-stop".
func RunChild(ctx context.Context, role string, stdin io.Reader, stdout io.Writer) error {
	in := bufio.NewScanner(stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	if !in.Scan() {
		return fmt.Errorf("tunnelbench %s: no spec on stdin", role)
	}
	var sp spec
	if err := json.Unmarshal(in.Bytes(), &sp); err != nil {
		return fmt.Errorf("tunnelbench %s: spec: %w", role, err)
	}
	out := &lineWriter{w: stdout}
	if role == RoleNode || role == RoleAgents {
		// Off unless the OTEL_* environment asks (bench tunnel's cost of tracing).
		stop, err := tracing.Setup(ctx, "tunnelplane-bench-"+role, "bench")
		if err != nil {
			return fmt.Errorf("tunnelbench %s: %w", role, err)
		}
		defer func() { _ = stop(context.WithoutCancel(ctx)) }()
	}
	switch role {
	case RoleOrigin:
		return serveUntilEOF(ctx, in, out, originHandler(), nil)
	case RoleNode:
		return runNode(ctx, sp, in, out)
	case RoleAgents:
		return runAgents(ctx, sp, in, out)
	case RoleRelay:
		return runRelay(ctx, sp.Target, in, out)
	case RoleLoad:
		res, err := runLoad(ctx, *sp.Load)
		if err != nil {
			return err
		}
		return out.send(message{Load: res})
	}
	return fmt.Errorf("%w: %q", ErrUnknownRole, role)
}

type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) send(m message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err = l.w.Write(append(b, '\n'))
	return err
}

// serveUntilEOF serves h on a loopback port until stdin closes, answering commands meanwhile.
func serveUntilEOF(ctx context.Context, in *bufio.Scanner, out *lineWriter, h http.Handler, onStop func()) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	if err := out.send(message{Addr: ln.Addr().String()}); err != nil {
		return err
	}
	commands(ctx, in, out, nil)
	if onStop != nil {
		onStop()
	}
	return nil
}

// commands answers stdin commands until stdin closes or ctx ends; own answers the commands of
// one role (nil, or false: unknown).
func commands(ctx context.Context, in *bufio.Scanner, out *lineWriter, own func(cmd string) (message, bool)) {
	lines := make(chan string)
	go func() {
		defer close(lines)
		for in.Scan() {
			lines <- in.Text()
		}
	}()
	var prof *os.File
	defer func() {
		if prof != nil {
			pprof.StopCPUProfile()
			prof.Close()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case line, ok := <-lines:
			if !ok {
				return
			}
			cmd, arg, _ := strings.Cut(line, " ")
			switch cmd {
			case "mem":
				m := readMem()
				out.send(message{Mem: &m})
			case "cpu":
				cpu, _ := node.ProcessCPU()
				out.send(message{CPU: cpu})
			case "calls":
				out.send(message{Calls: &callCounts{Recorded: callsRecorded.Load(), Dropped: callsDropped.Load()}})
			case "profile":
				f, err := os.Create(arg)
				if err == nil {
					err = pprof.StartCPUProfile(f)
				}
				if err != nil {
					out.send(message{Error: err.Error()})
					continue
				}
				prof = f
				out.send(message{OK: true})
			case "profile-stop":
				if prof != nil {
					pprof.StopCPUProfile()
					prof.Close()
					prof = nil
				}
				out.send(message{OK: true})
			default:
				if own != nil {
					if m, ok := own(cmd); ok {
						out.send(m)
						continue
					}
				}
				out.send(message{Error: "unknown command " + strconv.Quote(cmd)})
			}
		}
	}
}

// readMem reports memory after a full collection and after returning free pages to the OS, so
// that RSS reflects what is live.
func readMem() memStats {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memStats{RSS: rss(), HeapInuse: ms.HeapInuse, StackInuse: ms.StackInuse, Goroutines: runtime.NumGoroutine()}
}

func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

// benchRouter knows the bench tunnel and the idle ones.
type benchRouter struct{ idle int }

func (r benchRouter) Resolve(ref string, _ node.Principal) (node.Route, bool) {
	switch ref {
	case "bench":
		return node.Route{OrgID: "org-bench", TunnelID: "tun-bench", Name: "bench"}, true
	case "bench-calls": // the same tunnel, its access log "calls"
		return node.Route{OrgID: "org-bench", TunnelID: "tun-bench", Name: "bench", Calls: true}, true
	}
	if i, err := strconv.Atoi(strings.TrimPrefix(ref, "idle-")); err == nil && strings.HasPrefix(ref, "idle-") && i < r.idle {
		return node.Route{OrgID: "org-bench", TunnelID: "tun-" + ref, Name: ref}, true
	}
	return node.Route{}, false
}

// benchAuthorizer verifies the user token for real and allows the bench user; an access key it
// leaves to a node's view of a log that issued it for the bench tunnel (the production code).
type benchAuthorizer struct {
	v    *token.Verifier
	keys *view.View
}

// newKeyView is a view of a log holding the bench tunnel and an access key for it.
func newKeyView(hash string) (*view.View, error) {
	v := view.New(token.DefaultIssuer, view.Hooks{})
	evs := []domain.Event{
		domain.OrganizationCreated{OrgID: "org-bench", Name: "bench-org", CreatedBy: benchUser},
		domain.TunnelCreated{TunnelID: "tun-bench", OrgID: "org-bench", Owner: benchUser, Name: "bench", Upstream: "http://127.0.0.1:1", Protocol: "http"},
		domain.AccessKeyIssued{KeyID: "key-bench", OrgID: "org-bench", TunnelID: "tun-bench", SecretHash: hash,
			ExpiresAt: time.Now().Add(24 * time.Hour), IssuedBy: benchUser},
	}
	for i, e := range evs {
		b, err := json.Marshal(e)
		if err != nil {
			return nil, err
		}
		if err := v.Apply(view.Event{Position: uint64(i), EventID: strconv.Itoa(i), StreamID: "bench", Type: e.EventType(), Payload: b}); err != nil {
			return nil, err
		}
	}
	return v, nil
}

func (a benchAuthorizer) AuthenticateCaller(ctx context.Context, bearer string) (node.Principal, error) {
	if strings.HasPrefix(bearer, domain.AccessKeyPrefix) {
		return a.keys.AuthenticateCaller(ctx, bearer)
	}
	c, err := a.v.VerifyUser(bearer)
	if err != nil {
		return node.Principal{}, fmt.Errorf("%w: %w", node.ErrUnauthenticated, err)
	}
	return node.Principal{UserID: c.Subject}, nil
}

func (a benchAuthorizer) AuthorizeIngress(ctx context.Context, p node.Principal, r node.Route) error {
	if p.AccessKeyID != "" {
		return a.keys.AuthorizeIngress(ctx, p, r)
	}
	if p.UserID != benchUser {
		return fmt.Errorf("%w: %s", node.ErrForbidden, p.UserID)
	}
	return nil
}

const benchUser = "bench"

// routeSpec is a route table entry: the node holding the bench tunnel's agent.
type routeSpec struct {
	NodeID string `json:"node_id"`
	URL    string `json:"url"`
}

// benchPeers are the nodes' enrolled keys, as a log's key history would say.
type benchPeers map[string][]byte

func (p benchPeers) NodeKeys(id string) []ed25519.PublicKey {
	if k, ok := p[id]; ok {
		return []ed25519.PublicKey{k}
	}
	return nil
}

func runNode(ctx context.Context, sp spec, in *bufio.Scanner, out *lineWriter) error {
	// As `tunnelplane node` and `serve` do (see node.TuneGC, node.ProcsGovernor).
	node.TuneGC()
	var gov node.ProcsGovernor
	if err := gov.Start(ctx); err != nil {
		return err
	}
	defer gov.Stop()
	hk, err := ssh.NewSignerFromKey(ed25519.NewKeyFromSeed(sp.HostKeySeed))
	if err != nil {
		return fmt.Errorf("node host key: %w", err)
	}
	keys := token.NewKeySet()
	keys.Put(sp.TokenKeyID, ed25519.PublicKey(sp.TokenPub))
	v := &token.Verifier{Keys: keys, Issuer: token.DefaultIssuer}
	kv, err := newKeyView(sp.AccessKeyHash)
	if err != nil {
		return fmt.Errorf("node access keys: %w", err)
	}
	nodeID := cmp.Or(sp.NodeID, "bench-node")
	var peers node.PeerKeys
	var peerKey ssh.Signer
	if sp.PeerSeed != nil {
		if peerKey, err = ssh.NewSignerFromKey(ed25519.NewKeyFromSeed(sp.PeerSeed)); err != nil {
			return fmt.Errorf("node peer key: %w", err)
		}
		peers = benchPeers(sp.Peers)
	}
	n, err := node.New(node.Config{
		NodeID: nodeID, HostKey: hk, Peers: peers, PeerKey: peerKey,
		Authenticator: node.TokenAuthenticator{Verifier: v},
		Router:        benchRouter{idle: sp.IdleTunnels},
		Authorizer:    benchAuthorizer{v: v, keys: kv},
		Sink:          newCallsSink(),
		// Every load process of the bench connects from 127.0.0.1.
		MaxConnsPerSource: 1 << 20,
		Logger:            slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	addr := sp.ListenAddr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if sp.Route != nil {
		n.PutRoute("tun-bench", sp.Route.NodeID, sp.Route.URL)
	}
	srv := n.NewServer(map[string]http.Handler{"/v1/agent": n.AgentHandler(), "/v1/peer": n.PeerHandler()})
	go srv.Serve(ln)
	if err := out.send(message{Addr: ln.Addr().String()}); err != nil {
		return err
	}
	commands(ctx, in, out, func(cmd string) (message, bool) {
		if cmd == "sessions" {
			return message{Sessions: len(n.Sessions()), OK: true}, true
		}
		return message{}, false
	})
	srv.Close()
	n.Stop()
	return nil
}

// runAgents starts one agent per token, one after another, and reports each connect time
// (Run called → tunnel held) once all are up. They run until stdin closes.
func runAgents(ctx context.Context, sp spec, in *bufio.Scanner, out *lineWriter) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	times := make([]float64, 0, len(sp.Tokens))
	for i, tok := range sp.Tokens {
		connected := make(chan struct{})
		var once sync.Once
		start := time.Now()
		cfg := agent.Config{
			NodeURL: sp.NodeURL, Token: tok, Upstream: sp.Upstream, HostKeyFingerprint: sp.Fingerprint, Version: "bench",
			MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second,
			OnState: func(s agent.State, detail string) {
				if s == agent.StateConnected {
					once.Do(func() { close(connected) })
				}
				if s == agent.StateDisconnected {
					fmt.Fprintf(os.Stderr, "agent %d: %s\n", i, detail)
				}
			},
		}
		if sp.AgentDefaults {
			cfg.MinBackoff, cfg.MaxBackoff = 0, 0
		}
		wg.Go(func() { agent.Run(ctx, cfg) })
		select {
		case <-connected:
			times = append(times, float64(time.Since(start).Microseconds())/1000)
		case <-time.After(30 * time.Second):
			return fmt.Errorf("agent %d did not connect in 30s", i)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := out.send(message{ConnectMS: times}); err != nil {
		return err
	}
	commands(ctx, in, out, nil)
	return nil
}

// runRelay accepts loopback connections and joins each to a new connection to target, copying
// both ways with io.Copy (splice between the two TCP sockets), until stdin closes.
func runRelay(ctx context.Context, target string, in *bufio.Scanner, out *lineWriter) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go relay(c, target)
		}
	}()
	if err := out.send(message{Addr: ln.Addr().String()}); err != nil {
		return err
	}
	commands(ctx, in, out, nil)
	return nil
}

func relay(c net.Conn, target string) {
	defer c.Close()
	u, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer u.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(u, c)
		u.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(c, u)
	c.(*net.TCPConn).CloseWrite()
	<-done
}

package failover

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tunnelplane/tunnelplane/bus/controlbus"
)

// system is the cluster under test: one control plane, the nodes and one agent, each a process
// of the tunnelplane binary, on a scratch database and an embedded NATS server.
type system struct {
	o       *Options
	dir     string
	env     []string // every process's
	apiURL  string
	token   string // a superadmin's
	orgID   string
	tunnel  string // its id
	nodes   []*nodeProc
	agent   *proc
	control *proc
}

type nodeProc struct {
	*proc
	name, id string
	addr     string // agents and ingress
	health   string
}

// proc is a running process whose stderr is kept (bounded) and scanned by watch.
type proc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	tail bytes.Buffer
	seen []func(line string) bool
	done chan struct{}
}

func (s *system) start(ctx context.Context, name string, env []string, args ...string) (*proc, error) {
	cmd := exec.Command(s.o.Exe, args...)
	cmd.Env = append(append([]string{}, s.env...), env...)
	ownGroup(cmd)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench failover: start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go p.read(stderr)
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// read keeps the last 16 KiB of the process's log and hands each line to the watchers.
func (p *proc) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		if p.tail.Len() > 16<<10 {
			rest := p.tail.Bytes()[p.tail.Len()-8<<10:]
			p.tail.Reset()
			p.tail.Write(rest)
		}
		p.tail.WriteString(line + "\n")
		kept := p.seen[:0]
		for _, f := range p.seen {
			if !f(line) {
				kept = append(kept, f)
			}
		}
		p.seen = kept
		p.mu.Unlock()
	}
}

// watch calls f with every line from now on until it returns true.
func (p *proc) watch(f func(line string) bool) {
	p.mu.Lock()
	p.seen = append(p.seen, f)
	p.mu.Unlock()
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tail.String()
}

// stop ends the process group: SIGTERM, then SIGKILL after a few seconds.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = terminate(p.cmd)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = kill(p.cmd)
		<-p.done
	}
}

// run runs a command to its end and returns its last line of output (tokens, ids).
func (s *system) run(ctx context.Context, env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.o.Exe, args...)
	cmd.Env = append(append([]string{}, s.env...), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("bench failover: tunnelplane %s: %w\n%s", strings.Join(args[:min(3, len(args))], " "), err, tailOf(errb.String()))
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	return strings.TrimSpace(lines[len(lines)-1]), nil
}

func tailOf(s string) string {
	if len(s) > 2000 {
		return "…" + s[len(s)-2000:]
	}
	return s
}

// startSystem starts NATS (embedded, in this process), the control plane, Nodes nodes and the
// agent, and waits until a call through every node succeeds.
func startSystem(ctx context.Context, o *Options, dbURL string, upstream string) (_ *system, _ func(), err error) {
	dir, err := os.MkdirTemp("", "tpbench-failover-")
	if err != nil {
		return nil, nil, err
	}
	var undo []func()
	stop := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		os.RemoveAll(dir)
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	nats, err := controlbus.StartEmbedded(ctx, controlbus.EmbeddedConfig{Dir: filepath.Join(dir, "nats"), Port: -1, Logger: o.Logger})
	if err != nil {
		return nil, nil, err
	}
	undo = append(undo, nats.Shutdown)
	api, err := freeAddr()
	if err != nil {
		return nil, nil, err
	}
	s := &system{o: o, dir: dir, apiURL: "http://" + api}
	s.env = []string{"HOME=" + dir, "PATH=" + os.Getenv("PATH"), "TUNNELPLANE_DATABASE_URL=" + dbURL, "TUNNELPLANE_NATS_URL=" + nats.ClientURL(),
		"TUNNELPLANE_CLUSTER=failover" + filepath.Base(dir)[len("tpbench-failover-"):], "TUNNELPLANE_API_URL=" + s.apiURL,
		"TUNNELPLANE_LOG_FORMAT=json", "TUNNELPLANE_LOG_LEVEL=info"}
	control := filepath.Join(dir, "control")
	if _, err := s.run(ctx, nil, "init", "--data-dir", control); err != nil {
		return nil, nil, err
	}
	if s.control, err = s.start(ctx, "control", nil, "control", "--data-dir", control, "--api-addr", api); err != nil {
		return nil, nil, err
	}
	undo = append(undo, s.control.stop)
	if err := waitOK(ctx, s.apiURL+"/readyz", 60*time.Second, s.control); err != nil {
		return nil, nil, err
	}
	if s.token, err = s.run(ctx, nil, "admin", "token", "create", "--user", "root", "--role", "superadmin", "--data-dir", control); err != nil {
		return nil, nil, err
	}
	s.env = append(s.env, "TUNNELPLANE_TOKEN="+s.token)
	undo = append(undo, func() {
		for _, n := range s.nodes {
			n.stop()
		}
	})
	for i := range o.Nodes {
		if _, err := s.startNode(ctx, i); err != nil {
			return nil, nil, err
		}
	}
	if err := s.createTunnel(ctx, upstream); err != nil {
		return nil, nil, err
	}
	agentToken, err := s.run(ctx, nil, "admin", "tokens", "issue", "bench", "--org", "bench")
	if err != nil {
		return nil, nil, err
	}
	var nodeArgs []string
	for _, n := range s.nodes {
		nodeArgs = append(nodeArgs, "--node", "ws://"+n.addr+"/v1/agent")
	}
	// The nodes' host keys are pinned through the control plane (--control-url looks each up).
	args := append([]string{"connect", "--connections", "2", "--control-url", s.apiURL, "--failback-delay", "1h"}, nodeArgs...)
	if s.agent, err = s.start(ctx, "agent", []string{"TUNNELPLANE_AGENT_TOKEN=" + agentToken}, args...); err != nil {
		return nil, nil, err
	}
	undo = append(undo, s.agent.stop)
	for _, n := range s.nodes {
		if err := waitOK(ctx, s.callURL(n), 60*time.Second, s.agent, "Authorization", "Bearer "+s.token); err != nil {
			return nil, nil, fmt.Errorf("bench failover: no call through node %s: %w", n.name, err)
		}
	}
	return s, stop, nil
}

func (s *system) startNode(ctx context.Context, i int) (*nodeProc, error) {
	enroll, err := s.run(ctx, nil, "admin", "nodes", "enrollment-tokens", "create", "--ttl", "1h", "--uses", "1")
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	health, err := freeAddr()
	if err != nil {
		return nil, err
	}
	n := &nodeProc{name: fmt.Sprintf("edge-%d", i+1), addr: addr, health: health}
	env := []string{"TUNNELPLANE_ENROLLMENT_TOKEN=" + enroll, "TUNNELPLANE_TOKEN="}
	if n.proc, err = s.start(ctx, n.name, env, "node", "--name", n.name, "--data-dir", filepath.Join(s.dir, n.name),
		"--node-addr", addr, "--health-addr", health, "--failover-wait", s.o.FailoverWait.String()); err != nil {
		return nil, err
	}
	s.nodes = append(s.nodes, n)
	if err := waitOK(ctx, "http://"+health+"/readyz", 60*time.Second, n.proc); err != nil {
		return nil, err
	}
	var list struct {
		Items []struct{ ID, Name string } `json:"items"`
	}
	if err := s.getUntil(ctx, "/api/v1/nodes?name="+n.name, &list, func() bool { return len(list.Items) == 1 }); err != nil {
		return nil, err
	}
	if len(list.Items) != 1 {
		return nil, fmt.Errorf("bench failover: %d nodes named %s", len(list.Items), n.name)
	}
	n.id = list.Items[0].ID
	return n, nil
}

func (s *system) createTunnel(ctx context.Context, upstream string) error {
	if _, err := s.run(ctx, nil, "admin", "orgs", "create", "bench"); err != nil {
		return err
	}
	if _, err := s.run(ctx, nil, "admin", "tunnels", "create", "bench", "--org", "bench", "--upstream", upstream); err != nil {
		return err
	}
	var list struct {
		Items []struct {
			ID    string `json:"id"`
			OrgID string `json:"org_id"`
		} `json:"items"`
	}
	if err := s.getUntil(ctx, "/api/v1/tunnels?org=bench", &list, func() bool { return len(list.Items) == 1 }); err != nil {
		return err
	}
	if len(list.Items) != 1 {
		return fmt.Errorf("bench failover: %d tunnels in org bench", len(list.Items))
	}
	s.tunnel, s.orgID = list.Items[0].ID, list.Items[0].OrgID
	return nil
}

func (s *system) callURL(n *nodeProc) string { return "http://" + n.addr + "/t/bench.bench/call" }

// holders are the nodes that hold a connected session of the agent, as the control plane lists
// them.
func (s *system) holders(ctx context.Context) ([]*nodeProc, error) {
	var list struct {
		Items []struct {
			NodeID string `json:"node_id"`
		} `json:"items"`
	}
	if err := s.get(ctx, "/api/v1/sessions?org=bench&state=connected&tunnel_id="+s.tunnel, &list); err != nil {
		return nil, err
	}
	var out []*nodeProc
	for _, n := range s.nodes {
		for _, it := range list.Items {
			if it.NodeID == n.id {
				out = append(out, n)
				break
			}
		}
	}
	return out, nil
}

// getUntil gets path into into until done says so, for up to 10 s (the read models follow the
// log a moment behind a command's answer).
func (s *system) getUntil(ctx context.Context, path string, into any, done func() bool) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := s.get(ctx, path, into); err != nil || done() || time.Now().After(deadline) {
			return err
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *system) get(ctx context.Context, path string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.apiURL+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bench failover: GET %s: %s: %s", path, resp.Status, tailOf(string(b)))
	}
	return json.Unmarshal(b, into)
}

// waitOK polls url until it answers 2xx, the process p ends (its log tail in the error) or the
// time is up.
func waitOK(ctx context.Context, url string, within time.Duration, p *proc, header ...string) error {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return nil
			}
			err = errors.New(resp.Status)
		}
		last = err
		select {
		case <-p.done:
			return fmt.Errorf("bench failover: %s exited:\n%s", p.name, tailOf(p.log()))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("bench failover: %s not ready after %s (%v):\n%s", url, within, last, tailOf(p.log()))
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

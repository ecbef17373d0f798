package main

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/internal/logbuf"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// A holding node killed (SIGKILL: its route entries stay until the bucket's age expires them)
// while the agent also holds another node: calls entering at a node without the agent go on
// through the other holder. Only calls in flight on the killed node may fail, and the upstream
// never sees a POST twice.
func TestKillingAHoldingNodeLeavesCallsToTheOther(t *testing.T) {
	t.Parallel()
	c := newFwdCluster(t, 5*time.Second)
	bin := buildBinary(t)
	a, aReg := c.node("ingress")
	cNode, _ := c.node("holder-2")
	ln := listen(t)
	bAddr := ln.Addr().String()
	ln.Close()
	var out logbuf.Buffer
	b := exec.Command(bin, "node", "--name", "holder-1", "--node-addr", bAddr, "--nats-url", c.natsURL, "--cluster", c.cluster,
		"--control-url", c.cpURL, "--token", c.root, "--data-dir", t.TempDir(), "--log-level", "warn")
	b.Env = cleanEnv()
	b.Stdout, b.Stderr = &out, &out
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = b.Wait(); close(exited) }()
	t.Cleanup(func() { _ = b.Process.Kill(); <-exited })
	bURL := "http://" + bAddr
	poll.Until(t, 60*time.Second, "the node process listening", func() bool {
		resp, err := http.Get(bURL + "/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	_, tok := c.tunnel("llm", a, cNode)
	c.agent(tok, bURL+"/v1/agent", cNode.URL+"/v1/agent")
	poll.Until(t, 30*time.Second, "both holders in the ingress node's route table", func() bool {
		return regGauge(t, aReg, "tunnelplane_node_peer_routes") == 2
	})
	c.served(a.URL, "llm")

	const workers = 4
	var (
		mu       sync.Mutex
		failures []string
		lastFail time.Time
		ok       atomic.Int64
		seq      atomic.Int64
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprint("req-", seq.Add(1))
				req, _ := http.NewRequest(http.MethodPost, a.URL+"/t/llm.acme/sum", strings.NewReader(id))
				req.Header.Set("Authorization", "Bearer "+c.alice)
				req.Header.Set("X-Request-Id", id)
				resp, err := c.client.Do(req)
				status := 0
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				if status == http.StatusOK {
					ok.Add(1)
					continue
				}
				mu.Lock()
				failures = append(failures, fmt.Sprintf("%s: %d %v", id, status, err))
				lastFail = time.Now()
				mu.Unlock()
			}
		})
	}
	poll.Until(t, 10*time.Second, "calls flowing", func() bool { return ok.Load() > 200 })
	killed := time.Now()
	if err := b.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	before := ok.Load()
	poll.Until(t, 10*time.Second, "calls served after the kill", func() bool { return ok.Load() > before+500 })
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(failures) > workers {
		t.Fatalf("%d calls failed, more than the %d that can have been in flight on the killed node: %v", len(failures), workers, failures)
	}
	if len(failures) > 0 && lastFail.Sub(killed) > 2*time.Second {
		t.Fatalf("a call failed %v after the kill: %v", lastFail.Sub(killed), failures)
	}
	if d := c.up.duplicates(); len(d) > 0 {
		t.Fatalf("the upstream saw POSTs twice: %v", d)
	}
	t.Logf("%d calls served, %d failed (in flight on the killed node): %v", ok.Load(), len(failures), failures)
}

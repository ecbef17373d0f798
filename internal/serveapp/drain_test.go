package serveapp_test

import (
	"bufio"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/nodeapp"
	"github.com/tunnelplane/tunnelplane/internal/serveapp"
)

// The drain a Kubernetes preStop hook asks for (nodeapp.RequestDrain, what `tunnelplane node
// drain` sends), with calls in flight through a real agent: a call that ends within
// --drain-timeout ends whole, one that would run longer is cut at the timeout, the drain says it
// was cut, and the node takes no new call.
func TestDrainLetsCallsInFlightFinishUntilTheTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	t.Parallel()
	const drainTimeout = 2 * time.Second
	// 100 ms between streamed tokens: 4 tokens take ~0.4 s, 200 take ~20 s.
	sv := startDemo(t, nodeapp.Config{Name: "node-1", ListenAddr: "127.0.0.1:0", HealthAddr: "127.0.0.1:0", DrainTimeout: drainTimeout},
		100*time.Millisecond)
	call := func(tokens int) (*http.Response, error) {
		req, err := http.NewRequest("POST", sv.Demo.TunnelURL+"/api/generate",
			strings.NewReader(`{"prompt":"x","options":{"num_predict":`+strconv.Itoa(tokens)+`}}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+sv.Demo.UserToken)
		return http.DefaultClient.Do(req)
	}
	type streamed struct {
		lines int
		err   error
	}
	// Two calls in flight, each past its first token when the drain starts.
	stream := func(tokens int) <-chan streamed {
		resp, err := call(tokens)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("call: %d", resp.StatusCode)
		}
		br := bufio.NewReader(resp.Body)
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		out := make(chan streamed, 1)
		go func() {
			defer resp.Body.Close()
			n := 1
			for {
				_, err := br.ReadString('\n')
				if err != nil {
					if err == io.EOF {
						err = nil
					}
					out <- streamed{n, err}
					return
				}
				n++
			}
		}()
		return out
	}
	short, long := stream(4), stream(200)

	start := time.Now()
	res, err := nodeapp.RequestDrain(t.Context(), strings.TrimPrefix(sv.Node.HealthURL, "http://"), drainTimeout+10*time.Second)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if res.AgentsDisconnected != 1 || res.Complete {
		t.Fatalf("drain with a call longer than the timeout: %+v", res)
	}
	if took < drainTimeout-200*time.Millisecond || took > drainTimeout+3*time.Second {
		t.Fatalf("the drain took %v with --drain-timeout %v", took, drainTimeout)
	}
	// 4 tokens and the final line: whole.
	if s := <-short; s.lines != 5 || s.err != nil {
		t.Fatalf("the short call in flight: %d lines, %v", s.lines, s.err)
	}
	if s := <-long; s.lines >= 201 {
		t.Fatalf("the long call was not cut at the drain timeout: %d lines", s.lines)
	}
	if resp, err := call(1); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("a drained node took a new call")
		}
	}
}

// startDemo runs serve with the demo (its upstream streams a token every delay) and node as its
// node, on a database and data dir of the test's own.
func startDemo(t *testing.T, node nodeapp.Config, delay time.Duration) *serveapp.App {
	t.Helper()
	sv, err := serveapp.New(serveapp.Config{
		Control:  controlapp.Config{DatabaseURL: pgtest.NewEmptyDatabase(t), DataDir: t.TempDir(), APIAddr: "127.0.0.1:0"},
		Node:     node,
		NATSHost: "127.0.0.1", NATSPort: -1, Demo: true, DemoDelay: delay,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sv.Close)
	if err := sv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	return sv
}

package serveapp_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/internal/nodeapp"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// --failover-wait reaches serve's node: a call made while the demo agent reconnects (it waits
// 250 ms or more before it dials again) waits that long for it and is answered 503 naming the
// wait; once the agent is back, calls go through.
func TestFailoverWaitReachesServesNode(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	t.Parallel()
	const wait = 100 * time.Millisecond
	sv := startDemo(t, nodeapp.Config{Name: "node-1", ListenAddr: "127.0.0.1:0",
		Limits: nodeapp.Limits{FailoverWait: wait, MaxQueuedPerTunnel: 4}}, time.Millisecond)
	call := func() (int, string, time.Duration) {
		t.Helper()
		req, err := http.NewRequest("GET", sv.Demo.TunnelURL+"/healthz", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+sv.Demo.UserToken)
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), time.Since(start)
	}
	if status, body, _ := call(); status != http.StatusOK {
		t.Fatalf("before: %d %s", status, body)
	}
	if n := sv.Node.Node.DisconnectTunnel(sv.Demo.TunnelID, "cut by the test"); n != 1 {
		t.Fatalf("%d sessions cut", n)
	}
	status, body, took := call()
	var p struct{ Type, Detail string }
	_ = json.Unmarshal([]byte(body), &p)
	if status != http.StatusServiceUnavailable || !strings.HasSuffix(p.Type, ":agent-absent") || !strings.Contains(p.Detail, "waited 100ms") || took < wait {
		t.Fatalf("while the agent reconnects: %d after %v: %s", status, took, body)
	}
	poll.Until(t, 10*time.Second, "the agent is back", func() bool { status, _, _ := call(); return status == http.StatusOK })
}

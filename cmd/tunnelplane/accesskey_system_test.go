package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// An access key issued through the API reaches the node over the log (relay, NATS, the verified
// view) and calls the tunnel with the key in X-Tunnel-Key and the caller's own Authorization
// beside it; revoked through the API, the node refuses it within a second or two, although it
// had cached the key's authentication.
func TestSystemAccessKeyCallsItsTunnelUntilRevoked(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	t.Parallel()
	sv, _ := startTestServe(t)
	d := sv.Demo
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	api := func(method, path string, body any) map[string]any {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, sv.CP.URL+path, rd)
		req.Header.Set("Authorization", "Bearer "+d.UserToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %d %v %v", method, path, resp.StatusCode, out, err)
		}
		return out
	}
	issued := api(http.MethodPost, "/api/v1/tunnels/"+d.TunnelID+"/access-keys?org=demo", map[string]any{"ttl": "1d"})
	secret, _ := issued["secret"].(string)
	id, _ := issued["id"].(string)
	if !strings.HasPrefix(secret, "tpk_") || id == "" {
		t.Fatalf("issued %v", issued)
	}
	call := func() (int, string) {
		req, _ := http.NewRequest(http.MethodGet, sv.Node.URL+"/t/llm.demo/api/tags", nil)
		req.Header.Set("X-Tunnel-Key", secret)
		req.Header.Set("Authorization", "Bearer sk-the-upstreams-own")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	poll.Until(t, 10*time.Second, "the node lets the access key through", func() bool { s, _ := call(); return s == http.StatusOK })
	api(http.MethodDelete, "/api/v1/access-keys/"+id+"?org=demo&reason=leaked", nil)
	start := time.Now()
	poll.Until(t, 3*time.Second, "the revoked access key is refused", func() bool { s, _ := call(); return s == http.StatusUnauthorized })
	t.Logf("refused %s after the revocation", time.Since(start))
	if _, body := call(); !strings.Contains(body, `"code":"unauthenticated"`) || !strings.Contains(body, "revoked") {
		t.Fatalf("refusal body: %s", body)
	}
}

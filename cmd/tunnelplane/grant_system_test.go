package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// Grants made through the API reach the node over the log (relay, NATS, the verified view): a
// viewer without a grant is refused (403) and with one calls the tunnel; a user of no role whose
// token carries a granted group calls it; a revoked grant is refused again.
func TestSystemGrantsAtTheIngress(t *testing.T) {
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
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, sv.CP.URL+path, bytes.NewReader(b))
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
	mint := func(user string, groups ...string) string {
		raw, err := token.MintUserInGroups(sv.CP.Service.TokenKey(), token.DefaultIssuer, user, "", groups, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	call := func(tok string) int { return callDemoTunnel(t, client, sv.Node.URL, tok) }
	api(http.MethodPost, "/api/v1/role-assignments", map[string]string{"org": "demo", "user_id": "vic", "role": "viewer"})
	vic, gus := mint("vic"), mint("gus", "ops", "ml-team")
	poll.Until(t, 10*time.Second, "the node refusing a viewer without a grant", func() bool { return call(vic) == http.StatusForbidden })
	if s := call(gus); s != http.StatusNotFound {
		t.Fatalf("a stranger before the group grant: %d", s)
	}
	g := api(http.MethodPost, "/api/v1/tunnels/"+d.TunnelID+"/grants?org=demo", map[string]string{"user": "vic", "ttl": "1h"})
	api(http.MethodPost, "/api/v1/tunnels/"+d.TunnelID+"/grants?org=demo", map[string]string{"group": "ml-team", "ttl": "1h"})
	poll.Until(t, 10*time.Second, "the viewer's grant letting it through", func() bool { return call(vic) == http.StatusOK })
	poll.Until(t, 10*time.Second, "the group grant letting its member through", func() bool { return call(gus) == http.StatusOK })
	id, _ := g["id"].(string)
	api(http.MethodDelete, "/api/v1/tunnels/"+d.TunnelID+"/grants/"+id+"?org=demo&reason=done", nil)
	start := time.Now()
	poll.Until(t, 3*time.Second, "the revoked grant refused", func() bool { return call(vic) == http.StatusForbidden })
	t.Logf("refused %s after the revocation", time.Since(start))
	if s := call(gus); s != http.StatusOK {
		t.Fatalf("the group grant after another's revocation: %d", s)
	}
}

// callDemoTunnel calls the demo tunnel at the node with a bearer token and returns the status.
func callDemoTunnel(t *testing.T, client *http.Client, nodeURL, tok string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, nodeURL+"/t/llm.demo/api/tags", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

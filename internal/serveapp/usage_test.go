package serveapp_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/nodeapp"
	"github.com/tunnelplane/tunnelplane/internal/poll"
	"github.com/tunnelplane/tunnelplane/internal/serveapp"
)

// Scripted traffic through a real tunnel (agent, node, NATS, ingester, usage projection) lands in
// the hourly rollups the analytics API answers with, per caller, with the exact request and byte
// counts the callers sent and received: the owner's user token and an access key, each with its
// own calls of known sizes, and error answers counted as errors.
func TestScriptedTrafficLandsInTheRollupsExactly(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	t.Parallel()
	sv, err := serveapp.New(serveapp.Config{
		Control: controlapp.Config{DatabaseURL: pgtest.NewEmptyDatabase(t), DataDir: t.TempDir(), APIAddr: "127.0.0.1:0"},
		Node: nodeapp.Config{Name: "node-1", ListenAddr: "127.0.0.1:0", BaseDomain: "localhost",
			UsageWindow: 200 * time.Millisecond},
		NATSHost: "127.0.0.1", NATSPort: -1, Demo: true, DemoDelay: time.Millisecond,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sv.Close)
	start := time.Now().UTC()
	if err := sv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	d := sv.Demo
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	do := func(req *http.Request) (int, []byte) {
		t.Helper()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b
	}
	api := func(method, path string, body any, out any) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, sv.CP.URL+path, bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+d.UserToken)
		req.Header.Set("Content-Type", "application/json")
		code, resp := do(req)
		if code >= 300 || json.Unmarshal(resp, out) != nil {
			t.Fatalf("%s %s: %d %s", method, path, code, resp)
		}
	}
	var key struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	api(http.MethodPost, "/api/v1/tunnels/"+d.TunnelID+"/access-keys?org=demo", map[string]string{"ttl": "1h"}, &key)

	want := map[string]*totals{}
	// call sends body (POST /echo answers it back) or GET path, and counts what went each way.
	call := func(kind, who string, setAuth func(*http.Request), path string, body []byte, wantStatus int) {
		t.Helper()
		method, rd := http.MethodGet, io.Reader(nil)
		if body != nil {
			method, rd = http.MethodPost, bytes.NewReader(body)
		}
		req, _ := http.NewRequest(method, d.TunnelURL+path, rd)
		setAuth(req)
		code, got := do(req)
		if code != wantStatus {
			t.Fatalf("%s %s as %s: %d, want %d", method, path, kind, code, wantStatus)
		}
		k := kind + "/" + who
		if want[k] == nil {
			want[k] = &totals{}
		}
		w := want[k]
		w.requests++
		w.in += int64(len(body))
		if code >= 400 {
			w.errors++
			return // the node's own answer, not the upstream's bytes
		}
		w.out += int64(len(got))
	}
	owner := func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+d.UserToken) }
	byKey := func(r *http.Request) { r.Header.Set("X-Tunnel-Key", key.Secret) }
	// The node may not have applied the new key yet: a refused call is no usage of the tunnel,
	// so the first call that succeeds is counted.
	poll.Until(t, 10*time.Second, "the node taking the new access key", func() bool {
		req, _ := http.NewRequest(http.MethodGet, d.TunnelURL+"/api/tags", nil)
		byKey(req)
		code, got := do(req)
		if code != http.StatusOK {
			return false
		}
		want["access_key/"+key.ID] = &totals{requests: 1, out: int64(len(got))}
		return true
	})
	const ownerID = "demo" // the demo token's user
	for i := range 7 {
		call(domain.CallerUser, ownerID, owner, "/echo", bytes.Repeat([]byte{'a' + byte(i)}, 1000*(i+1)), http.StatusOK)
	}
	for range 3 {
		call(domain.CallerUser, ownerID, owner, "/api/tags", nil, http.StatusOK)
	}
	for i := range 5 {
		call(domain.CallerAccessKey, key.ID, byKey, "/echo", []byte(strings.Repeat("xyz", 333*(i+1))), http.StatusOK)
	}
	call(domain.CallerAccessKey, key.ID, byKey, "/bytes?n=65536", nil, http.StatusOK)
	// A member without a grant is refused: a call of that caller, and an error.
	var assigned map[string]any
	api(http.MethodPost, "/api/v1/role-assignments", map[string]string{"org": "demo", "user_id": "vic", "role": "viewer"}, &assigned)
	vic, err := token.MintUser(sv.CP.Service.TokenKey(), token.DefaultIssuer, "vic", "", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	asVic := func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+vic) }
	// Until the node knows vic's role, vic is a stranger the tunnel does not exist for (404, no
	// usage of it); from then on refused (403), and that counts.
	poll.Until(t, 10*time.Second, "the node knowing vic's role", func() bool {
		req, _ := http.NewRequest(http.MethodGet, d.TunnelURL+"/api/tags", nil)
		asVic(req)
		code, _ := do(req)
		return code == http.StatusForbidden
	})
	want[domain.CallerUser+"/vic"] = &totals{requests: 1, errors: 1}
	call(domain.CallerUser, "vic", asVic, "/api/tags", nil, http.StatusForbidden)

	q := url.Values{"org": {"demo"}, "group_by": {"caller"}, "granularity": {"day"},
		"from": {start.Add(-time.Hour).Format(time.RFC3339)}, "to": {time.Now().UTC().Add(2 * time.Hour).Format(time.RFC3339)}}
	poll.Check(t, 30*time.Second, 100*time.Millisecond, func() error {
		var rep struct {
			Items []struct {
				CallerKind string `json:"caller_kind"`
				CallerID   string `json:"caller_id"`
				Requests   int64  `json:"requests"`
				Errors     int64  `json:"errors"`
				BytesIn    int64  `json:"bytes_in"`
				BytesOut   int64  `json:"bytes_out"`
			} `json:"items"`
		}
		api(http.MethodGet, "/api/v1/analytics/usage?"+q.Encode(), nil, &rep)
		got := map[string]*totals{}
		for _, it := range rep.Items {
			k := it.CallerKind + "/" + it.CallerID
			if got[k] == nil {
				got[k] = &totals{}
			}
			g := got[k]
			g.requests += it.Requests
			g.errors += it.Errors
			g.in += it.BytesIn
			g.out += it.BytesOut
		}
		if len(got) != len(want) {
			return fmt.Errorf("the rollups hold %s; the callers sent %s", describe(got), describe(want))
		}
		for k, w := range want {
			if g := got[k]; g == nil || *g != *w {
				return fmt.Errorf("the rollups hold %s; the callers sent %s", describe(got), describe(want))
			}
		}
		return nil
	})
	t.Logf("the rollups hold exactly what the callers sent: %s", describe(want))
}

// totals are a caller's calls as its side counted them, or as the rollups hold them.
type totals struct{ requests, errors, in, out int64 }

func describe(m map[string]*totals) string {
	var b strings.Builder
	for k, v := range m {
		fmt.Fprintf(&b, "%s: %d requests, %d errors, %d bytes in, %d out; ", k, v.requests, v.errors, v.in, v.out)
	}
	return b.String()
}

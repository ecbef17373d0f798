package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// Scripted calls through the demo tunnel with its access log set to "calls" come back through
// GET /tunnels/{id}/access as exactly those records: method, route (no query string, cut to 256
// bytes), status and bytes each way, with the caller. Calls made while the setting is "windows"
// (before, and after it is set back) leave no record, and each change is in the audit search.
func TestSystemAccessLogRecordsEachCall(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	t.Parallel()
	sv, _ := startTestServe(t)
	d := sv.Demo
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	do := func(method, url, bearer string, body []byte) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, url, bytes.NewReader(body))
		if body == nil {
			req.Body = nil
		}
		req.Header.Set("Authorization", "Bearer "+bearer)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	adminAPI := func(method, path string, body any, out any) {
		t.Helper()
		var raw []byte
		if body != nil {
			raw, _ = json.Marshal(body)
		}
		status, b := do(method, sv.CP.URL+path, d.UserToken, raw)
		if status >= 300 {
			t.Fatalf("%s %s: %d %s", method, path, status, b)
		}
		if out != nil {
			if err := json.Unmarshal(b, out); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
		}
	}
	// setAccessLog sets the tunnel's access log and waits until the node's view holds the change.
	setAccessLog := func(mode string) {
		t.Helper()
		var res struct{ Position uint64 }
		adminAPI(http.MethodPut, "/api/v1/tunnels/"+d.TunnelID+"/access-log?org=demo", api.AccessLogInput{AccessLog: mode}, &res)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := sv.Node.View.WaitFor(ctx, res.Position); err != nil {
			t.Fatalf("the node's view did not reach the access log change: %v", err)
		}
	}
	records := func() []api.AccessCall {
		t.Helper()
		var all []api.AccessCall
		cursor := ""
		for {
			var page api.List[api.AccessCall]
			adminAPI(http.MethodGet, "/api/v1/tunnels/"+d.TunnelID+"/access?org=demo&limit=2&wait_for=latest"+cursor, nil, &page)
			all = append(all, page.Items...)
			if page.NextCursor == "" {
				return all
			}
			cursor = "&cursor=" + page.NextCursor
		}
	}
	waitForRoute := func(route string) []api.AccessCall {
		t.Helper()
		var got []api.AccessCall
		poll.Until(t, 15*time.Second, "the call to "+route+" is recorded", func() bool {
			got = records()
			return slices.ContainsFunc(got, func(c api.AccessCall) bool { return c.Route == route })
		})
		return got
	}
	tunnel := d.TunnelURL

	if s, _ := do(http.MethodGet, tunnel+"/echo/before?x=1", d.UserToken, nil); s != http.StatusOK {
		t.Fatalf("call before: %d", s)
	}
	setAccessLog("calls")

	type want struct {
		method, route  string
		status         int32
		bytesIn, bytes int64
	}
	var wants []want
	call := func(method, path string, body []byte) {
		status, b := do(method, tunnel+path, d.UserToken, body)
		route, _, _ := strings.Cut(path, "?")
		if len(route) > 256 {
			route = route[:256]
		}
		wants = append(wants, want{method, route, int32(status), int64(len(body)), int64(len(b))})
	}
	call(http.MethodGet, "/bytes?n=1234", nil)
	call(http.MethodPost, "/echo/chat?api_key=in-the-query", bytes.Repeat([]byte("x"), 300))
	call(http.MethodGet, "/bytes?n=not-a-number", nil)
	call(http.MethodGet, "/no-such-route", nil)
	call(http.MethodGet, "/"+strings.Repeat("a", 1000)+"?q=1", nil)
	call(http.MethodDelete, "/echo/last", nil)
	if wants[0].status != 200 || wants[1].status != 200 || wants[2].status != 400 || wants[3].status != 404 {
		t.Fatalf("the demo upstream answered %+v", wants)
	}

	got := waitForRoute("/echo/last")
	if len(got) != len(wants) {
		t.Fatalf("%d records, want %d: %+v", len(got), len(wants), got)
	}
	for i, w := range wants {
		g := got[i]
		if g.Method != w.method || g.Route != w.route || g.Status != w.status || g.BytesIn != w.bytesIn || g.BytesOut != w.bytes {
			t.Errorf("record %d: %s %s %d in %d out %d, want %s %s %d in %d out %d", i, g.Method, g.Route, g.Status, g.BytesIn, g.BytesOut,
				w.method, w.route, w.status, w.bytesIn, w.bytes)
		}
		if g.CallerKind != "user" || g.CallerID != "demo" || g.NodeID != sv.Node.ID.ID || g.TunnelID != d.TunnelID || g.At.IsZero() || g.DurationUS <= 0 {
			t.Errorf("record %d: caller %s:%s node %s tunnel %s at %v duration %dµs", i, g.CallerKind, g.CallerID, g.NodeID, g.TunnelID, g.At, g.DurationUS)
		}
	}
	// Filters: status and caller.
	var only404 api.List[api.AccessCall]
	adminAPI(http.MethodGet, "/api/v1/tunnels/"+d.TunnelID+"/access?org=demo&status=404", nil, &only404)
	if len(only404.Items) != 2 {
		t.Errorf("status=404: %d records, want 2", len(only404.Items))
	}
	var nobody api.List[api.AccessCall]
	adminAPI(http.MethodGet, "/api/v1/tunnels/"+d.TunnelID+"/access?org=demo&caller=someone-else", nil, &nobody)
	if len(nobody.Items) != 0 {
		t.Errorf("caller=someone-else: %d records", len(nobody.Items))
	}

	// Back to windows: a call then leaves no record. Calls on again, the next call is recorded
	// after it in the node's order, so once it is there the one before would be too.
	setAccessLog("windows")
	if s, _ := do(http.MethodGet, tunnel+"/echo/while-windows", d.UserToken, nil); s != http.StatusOK {
		t.Fatalf("call while windows: %d", s)
	}
	setAccessLog("calls")
	do(http.MethodGet, tunnel+"/echo/again", d.UserToken, nil)
	got = waitForRoute("/echo/again")
	for _, g := range got {
		if g.Route == "/echo/before" || g.Route == "/echo/while-windows" {
			t.Errorf("a call while the access log was windows was recorded: %+v", g)
		}
	}

	// The tunnel shows its setting, and its version (ETag) counts the changes.
	var tun api.Tunnel
	adminAPI(http.MethodGet, "/api/v1/tunnels/"+d.TunnelID+"?org=demo&wait_for=latest", nil, &tun)
	if tun.AccessLog != "calls" {
		t.Errorf("the tunnel shows access log %q, want calls", tun.AccessLog)
	}
	stream, err := sv.CP.Log.Store.ReadStream(context.Background(), domain.TunnelStream(d.TunnelID), 1, 100)
	if err != nil || tun.Version != int64(len(stream)) {
		t.Errorf("the tunnel's version is %d, its stream holds %d events (%v): an If-Match would fail", tun.Version, len(stream), err)
	}

	// The CLI: the records by tunnel name with a filter; a setting it does not know is refused.
	cli := func(args ...string) result {
		return tp(t, append(args, "--org", "demo", "--api-url", sv.CP.URL, "--token", d.UserToken)...)
	}
	if r := cli("admin", "tunnels", "access", "llm", "--status", "404"); r.code != 0 || strings.Count(r.stdout, " 404 ") != 2 ||
		!strings.Contains(r.stdout, "user:demo") || !strings.Contains(r.stdout, "/no-such-route") {
		t.Errorf("admin tunnels access --status 404: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := cli("admin", "tunnels", "set-access-log", "llm", "sometimes"); r.code == 0 || !strings.Contains(r.stderr, "access_log") {
		t.Errorf("set-access-log sometimes: %d %s", r.code, r.stderr)
	}

	var audit api.List[api.AuditEntry]
	adminAPI(http.MethodGet, "/api/v1/audit?org=demo&type=tunnel.access_log_set&wait_for=latest", nil, &audit)
	if len(audit.Items) != 3 {
		t.Fatalf("audit search: %d tunnel.access_log_set entries, want 3", len(audit.Items))
	}
	for _, e := range audit.Items {
		if e.Actor == nil || *e.Actor != "demo" || e.StreamID != "tunnel-"+d.TunnelID {
			t.Errorf("audit entry %s", fmt.Sprint(e))
		}
	}
}

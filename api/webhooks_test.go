package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// streamStatus opens a streaming route and returns its status once the headers came.
func (e *env) streamStatus(path, tok string) int {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.base+path, nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("GET %s: %v", path, err)
	}
	res.Body.Close()
	return res.StatusCode
}

// sse is one server-sent event, or a heartbeat (typ "").
type sse struct {
	id   uint64
	typ  string
	data map[string]any
}

// feed opens the caller's notifications feed (after lastID when it is not ""), and returns its
// events as they come; it closes when the test ends.
func (e *env) feed(tok, lastID string) <-chan sse {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.base+"/api/v1/notifications/stream", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		e.t.Fatalf("feed: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	out := make(chan sse, 64)
	go func() {
		defer close(out)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(nil, 1<<20)
		var ev sse
		seen := false
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if seen {
					select {
					case out <- ev:
					case <-ctx.Done():
						return
					}
				}
				ev, seen = sse{}, false
			case strings.HasPrefix(line, "id: "):
				ev.id, _ = strconv.ParseUint(line[4:], 10, 64)
				seen = true
			case strings.HasPrefix(line, "event: "):
				ev.typ = line[7:]
			case strings.HasPrefix(line, "data: "):
				_ = json.Unmarshal([]byte(line[6:]), &ev.data)
			}
		}
	}()
	return out
}

// recv is the next message of a feed, a heartbeat or an event.
func recv(t *testing.T, f <-chan sse) sse {
	t.Helper()
	select {
	case ev, ok := <-f:
		if !ok {
			t.Fatal("the feed ended")
		}
		return ev
	case <-time.After(20 * time.Second):
		t.Fatal("nothing on the feed within 20s")
	}
	panic("unreachable")
}

// next is the next event of a feed that is not a heartbeat.
func next(t *testing.T, f <-chan sse) sse {
	t.Helper()
	for {
		if ev := recv(t, f); ev.typ != "" {
			return ev
		}
	}
}

// quietUntil reads a feed until a heartbeat says it read past pos, failing on any event.
func quietUntil(t *testing.T, who string, f <-chan sse, pos uint64) {
	t.Helper()
	for {
		ev := recv(t, f)
		if ev.typ != "" {
			t.Fatalf("%s was told of %s at %d, meant for someone else", who, ev.typ, ev.id)
		}
		if ev.id >= pos {
			return
		}
	}
}

// TestNotificationFeed: each user's feed carries only their own notifications: the approver is
// told of the request, the requester of its approval and of the grant, a third user of nothing;
// Last-Event-ID resumes after the event it names; a user holds at most PerUser feeds at once.
func TestNotificationFeed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *api.Config) {
		c.Notifications = api.NotificationLimits{Heartbeat: 100 * time.Millisecond, PerUser: 3}
	})
	root := e.superadmin()
	org := e.createOrg(root, "acme", "owner-of-acme")
	e.grant(org, "alice", domain.RoleAdmin)
	e.grant(org, "bob", domain.RoleViewer)
	e.grant(org, "carol", domain.RoleViewer)
	tun := e.write(201, "POST", "/api/v1/tunnels?org=acme", root, map[string]string{"name": "llm", "upstream": "http://127.0.0.1:1"}).ID
	alice, bob, carol := e.feed(e.token("alice"), ""), e.feed(e.token("bob"), ""), e.feed(e.token("carol"), "")

	req := e.write(201, "POST", "/api/v1/access-requests", e.token("bob"), map[string]string{"org": "acme", "tunnel_id": tun, "duration": "1h", "reason": "on call"})
	ev := next(t, alice)
	if ev.typ != domain.TypeAccessRequested || ev.id != req.Position || ev.data["data"].(map[string]any)["request_id"] != req.ID {
		t.Fatalf("alice got %+v, want access.requested %s at %d", ev, req.ID, req.Position)
	}
	approved := e.write(200, "POST", "/api/v1/access-requests/"+req.ID+"/approve?org=acme", e.token("alice"), nil)
	first := next(t, bob)
	second := next(t, bob)
	if first.typ != domain.TypeAccessApproved || second.typ != domain.TypeGrantCreated || second.id != approved.Position {
		t.Fatalf("bob got %s at %d and %s at %d, want access.approved then grant.created at %d", first.typ, first.id, second.typ, second.id, approved.Position)
	}
	quietUntil(t, "alice", alice, approved.Position)
	quietUntil(t, "carol", carol, approved.Position)

	// Resumed after the approval, bob's feed starts with the grant.
	resumed := e.feed(e.token("bob"), strconv.FormatUint(first.id, 10))
	if ev := next(t, resumed); ev.typ != domain.TypeGrantCreated || ev.id != second.id {
		t.Fatalf("resumed after %d: %s at %d, want grant.created at %d", first.id, ev.typ, ev.id, second.id)
	}
	e.feed(e.token("bob"), "")
	if st := e.streamStatus("/api/v1/notifications/stream", e.token("bob")); st != http.StatusTooManyRequests {
		t.Fatalf("a fourth feed of bob: %d, want 429", st)
	}
	if st := e.streamStatus("/api/v1/notifications/stream?last_event_id=99999999", e.token("carol")); st != http.StatusBadRequest {
		t.Fatalf("Last-Event-ID past the log: %d, want 400", st)
	}
}

// TestWebhookSecretShownOnce: the whsec_ secret is in the answer to the create (and to an
// idempotent repeat of it, the same) and to a rotation, and nowhere else: not in the endpoint's
// GET or list, not in any record of the log.
func TestWebhookSecretShownOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	e.createOrg(root, "acme", "alice")
	body := map[string]any{"name": "chatops", "url": "https://hooks.example.com/tp", "types": []string{"access.requested"}}
	created := e.write(201, "POST", "/api/v1/webhooks?org=acme", root, body, "Idempotency-Key", "k1")
	if !strings.HasPrefix(created.Secret, "whsec_") || len(created.Secret) < 40 {
		t.Fatalf("create answered secret %q", created.Secret)
	}
	if again := e.write(201, "POST", "/api/v1/webhooks?org=acme", root, body, "Idempotency-Key", "k1"); again.ID != created.ID || again.Secret != created.Secret {
		t.Fatalf("an idempotent repeat answered %s %q, want %s and the same secret", again.ID, again.Secret, created.ID)
	}
	rotated := e.write(200, "POST", "/api/v1/webhooks/"+created.ID+"/rotate-secret?org=acme", root, nil)
	if !strings.HasPrefix(rotated.Secret, "whsec_") || rotated.Secret == created.Secret {
		t.Fatalf("rotation answered %q", rotated.Secret)
	}
	secrets := []string{created.Secret, rotated.Secret, strings.TrimPrefix(created.Secret, "whsec_"), strings.TrimPrefix(rotated.Secret, "whsec_")}
	pos := strconv.FormatUint(rotated.Position, 10)
	for _, path := range []string{"/api/v1/webhooks/" + created.ID + "?org=acme&wait_for=" + pos, "/api/v1/webhooks?org=acme&wait_for=" + pos} {
		r := e.must(200, "GET", path, root, nil)
		for _, s := range secrets {
			if strings.Contains(string(r.body), s) {
				t.Fatalf("GET %s shows the secret: %s", path, r.body)
			}
		}
		if !strings.Contains(string(r.body), created.ID) {
			t.Fatalf("GET %s: %s", path, r.body)
		}
	}
	recs, err := e.store.ReadAll(context.Background(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	sealed := 0
	for _, rec := range recs {
		for _, s := range secrets {
			if strings.Contains(string(rec.Payload), s) || strings.Contains(string(rec.Metadata), s) {
				t.Fatalf("record %d (%s) holds the secret in clear", rec.Position, rec.Type)
			}
		}
		if strings.HasPrefix(rec.Type, "webhook.") && strings.Contains(string(rec.Payload), domain.SealedPrefix) {
			sealed++
		}
	}
	if sealed != 2 {
		t.Fatalf("%d webhook records hold a sealed secret, want 2 (created, rotated)", sealed)
	}
}

// TestWebhookURLs: an endpoint must be https (http only to a loopback host), and may not name a
// loopback, private or link-local address unless the operator allowed it.
func TestWebhookURLs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	allowed := newEnv(t, func(c *api.Config) { c.WebhookAllowPrivate = true })
	for _, env := range []*env{e, allowed} {
		root := env.superadmin()
		env.createOrg(root, "acme", "alice")
		for url, want := range map[string]int{
			"https://hooks.example.com/tp":         201,
			"http://hooks.example.com/tp":          422,
			"https://user:pw@hooks.example.com/tp": 422,
			"ftp://hooks.example.com/tp":           422,
			"http://127.0.0.1:9/tp":                map[bool]int{false: 422, true: 201}[env == allowed],
			"https://10.1.2.3/tp":                  map[bool]int{false: 422, true: 201}[env == allowed],
			"https://169.254.169.254/latest/meta":  map[bool]int{false: 422, true: 201}[env == allowed],
			"https://[::ffff:192.168.1.1]/tp":      map[bool]int{false: 422, true: 201}[env == allowed],
			"https://localhost/tp":                 map[bool]int{false: 422, true: 201}[env == allowed],
		} {
			r := env.call("POST", "/api/v1/webhooks?org=acme", root, map[string]any{"name": "h", "url": url})
			if r.status != want {
				t.Errorf("allow private %v: %s: %d, want %d: %s", env == allowed, url, r.status, want, r.body)
			}
			if want == 422 && !strings.Contains(string(r.body), `"url"`) {
				t.Errorf("%s: the problem does not name the url: %s", url, r.body)
			}
		}
	}
}

// TestSlowFeedReaderIsDisconnected: a client that stops reading is cut off once a write to it
// takes longer than WriteTimeout, rather than buffered for: its feed slot frees, so the same user
// (one feed at a time here) opens a new one.
func TestSlowFeedReaderIsDisconnected(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *api.Config) {
		c.Notifications = api.NotificationLimits{PerUser: 1, WriteTimeout: 200 * time.Millisecond, Heartbeat: time.Hour}
	})
	e.superadmin()
	tok := e.token("bob")
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(conn, "GET /api/v1/notifications/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", tok)
	// Its answer's first bytes came: the feed is open (and holds bob's one slot).
	head := make([]byte, 12)
	if _, err := io.ReadFull(conn, head); err != nil || string(head) != "HTTP/1.1 200" {
		t.Fatalf("feed: %q %v", head, err)
	}
	if st := e.streamStatus("/api/v1/notifications/stream", tok); st != http.StatusTooManyRequests {
		t.Fatalf("a second feed while the first is open: %d, want 429", st)
	}
	// Notifications for bob, 8 KiB each, far more than the socket buffers hold; never read.
	pad := strings.Repeat("x", 8<<10)
	for i := range 40 {
		evs := make([]eventstore.EventData, 100)
		for j := range evs {
			b, _ := json.Marshal(domain.GrantExpiring{GrantID: uuid.NewString(), OrgID: uuid.NewString(), TunnelID: pad, SubjectKind: domain.GrantToUser,
				Subject: "bob", ExpiresAt: time.Now().Add(time.Hour)})
			evs[j] = eventstore.EventData{Type: domain.TypeGrantExpiring, Payload: b}
		}
		if _, err := e.store.Append(context.Background(), fmt.Sprintf("grantnotice-slow-%d", i), eventstore.NoStream, evs...); err != nil {
			t.Fatal(err)
		}
	}
	poll.Until(t, 60*time.Second, "the slow reader's slot is free again", func() bool {
		return e.streamStatus("/api/v1/notifications/stream", tok) == http.StatusOK
	})
}

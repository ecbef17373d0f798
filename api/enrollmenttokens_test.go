package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// issueEnrollmentToken issues a node enrollment token as root and returns its id and the token.
func (e *env) issueEnrollmentToken(root string, body any) (string, string) {
	e.t.Helper()
	r := e.must(http.StatusCreated, http.MethodPost, "/api/v1/nodes/enrollment-tokens", root, body)
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		e.t.Fatalf("Cache-Control %q on a response carrying a secret", cc)
	}
	var res commands.Result
	r.decode(e.t, &res)
	if !strings.HasPrefix(res.Secret, domain.EnrollmentTokenPrefix+res.ID+"_") || res.ExpiresAt == nil {
		e.t.Fatalf("issued: %+v", res)
	}
	return res.ID, res.Secret
}

func (e *env) enrollmentToken(root, id string) api.EnrollmentToken {
	e.t.Helper()
	var tok api.EnrollmentToken
	e.must(http.StatusOK, http.MethodGet, "/api/v1/nodes/enrollment-tokens/"+id+"?wait_for=latest", root, nil).decode(e.t, &tok)
	return tok
}

// refused asserts a 401 whose detail says why.
func refused(t *testing.T, r resp, why string) {
	t.Helper()
	if r.status != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401: %s", r.status, r.body)
	}
	if p := r.problem(t); !strings.Contains(p.Detail, why) {
		t.Fatalf("detail %q does not say %q", p.Detail, why)
	}
}

// A node enrollment token enrolls one node, once: its use is in the log (node.enrolled by the
// token, enrollment_token.used in the token's stream); the same node again changes nothing; a
// second node, an expired token, a revoked one and a made-up one are refused, saying why.
func TestEnrollmentTokenEnrollsOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	id, tok := e.issueEnrollmentToken(root, nil)
	if got := e.enrollmentToken(root, id); got.State != "active" || got.MaxUses != 1 || len(got.Nodes) != 0 ||
		got.ExpiresAt.Sub(time.Now()) > time.Hour || got.ExpiresAt.Sub(time.Now()) < 58*time.Minute {
		t.Fatalf("a fresh token: %+v", got)
	}

	first, _ := newNodeEnrollment(t, e.store, "edge-1")
	res := e.write(http.StatusCreated, http.MethodPost, "/api/v1/nodes", tok, first)
	var n api.Node
	e.must(http.StatusOK, http.MethodGet, fmt.Sprintf("/api/v1/nodes/%s?wait_for=%d", first.NodeID, res.Position), root, nil).decode(t, &n)
	if n.State != "joined" {
		t.Fatalf("node: %+v", n)
	}
	recs, err := e.store.ReadStream(context.Background(), domain.NodeStream(first.NodeID), 1, 10)
	if err != nil || len(recs) != 1 {
		t.Fatalf("node stream: %v %d", err, len(recs))
	}
	var meta domain.Metadata
	if err := json.Unmarshal(recs[0].Metadata, &meta); err != nil || meta.Actor != "enrollment-token:"+id {
		t.Fatalf("node.enrolled metadata %s names actor %q, want the enrollment token", recs[0].Metadata, meta.Actor)
	}
	used, err := e.store.ReadStream(context.Background(), domain.EnrollmentTokenStream(id), 1, 10)
	if err != nil || len(used) != 2 || used[1].Type != domain.TypeEnrollmentTokenUsed || !strings.Contains(string(used[1].Payload), first.NodeID) {
		t.Fatalf("token stream: %v %+v", err, used)
	}
	if got := e.enrollmentToken(root, id); got.State != "used" || len(got.Nodes) != 1 || got.Nodes[0] != first.NodeID {
		t.Fatalf("after its use: %+v", got)
	}

	// The node starting again with its (used) token: nothing to do.
	var again commands.Result
	e.must(http.StatusOK, http.MethodPost, "/api/v1/nodes", tok, first).decode(t, &again)
	if !again.Noop {
		t.Fatalf("the same node again: %+v", again)
	}
	second, _ := newNodeEnrollment(t, e.store, "edge-2")
	before := head(t, e.store)
	refused(t, e.call(http.MethodPost, "/api/v1/nodes", tok, second), "used up")
	if h := head(t, e.store); h != before {
		t.Fatalf("a refused enrollment appended %d records", h-before)
	}
	e.must(http.StatusNotFound, http.MethodGet, "/api/v1/nodes/"+second.NodeID+"?wait_for=latest", root, nil)

	// Revoked.
	rid, rtok := e.issueEnrollmentToken(root, api.EnrollmentTokenInput{TTL: "2d", Uses: 3})
	e.write(http.StatusOK, http.MethodDelete, "/api/v1/nodes/enrollment-tokens/"+rid+"?reason=leaked", root, nil)
	refused(t, e.call(http.MethodPost, "/api/v1/nodes", rtok, second), "revoked")
	if got := e.enrollmentToken(root, rid); got.State != "revoked" || got.MaxUses != 3 || got.RevokeReason == nil || *got.RevokeReason != "leaked" {
		t.Fatalf("revoked: %+v", got)
	}

	// Expired: a one-second token, once the view says it expired.
	xid, xtok := e.issueEnrollmentToken(root, api.EnrollmentTokenInput{TTL: "1s"})
	poll.Until(t, 5*time.Second, "the token expired", func() bool { return e.enrollmentToken(root, xid).State == "expired" })
	refused(t, e.call(http.MethodPost, "/api/v1/nodes", xtok, second), "expired")

	// Unknown, or a known id with another secret.
	refused(t, e.call(http.MethodPost, "/api/v1/nodes", domain.EnrollmentTokenPrefix+id+"_forged", second), "invalid enrollment token")
	refused(t, e.call(http.MethodPost, "/api/v1/nodes", "tpe_nonsense", second), "invalid enrollment token")

	// Bounds.
	for _, in := range []api.EnrollmentTokenInput{{TTL: "8d"}, {TTL: "0s"}, {Uses: 1001}, {Uses: -1}} {
		if r := e.call(http.MethodPost, "/api/v1/nodes/enrollment-tokens", root, in); r.status != http.StatusUnprocessableEntity {
			t.Errorf("%+v: status %d, want 422: %s", in, r.status, r.body)
		}
	}
	var l api.List[api.EnrollmentToken]
	e.must(http.StatusOK, http.MethodGet, "/api/v1/nodes/enrollment-tokens?state=active", root, nil).decode(t, &l)
	if len(l.Items) != 0 {
		t.Fatalf("active tokens: %+v", l.Items)
	}
	// Only superadmins see or issue them.
	e.createOrg(root, "acme", "alice")
	alice := e.token("alice")
	e.must(http.StatusForbidden, http.MethodGet, "/api/v1/nodes/enrollment-tokens", alice, nil)
	e.must(http.StatusForbidden, http.MethodPost, "/api/v1/nodes/enrollment-tokens", alice, nil)
}

// A single-use token is refused a second use by the log, not by this process's memory: another
// control plane replica (its own command service, whose cache holds the token before its use)
// decides a second use, and the append at the stale stream version fails; decided again on the
// log, the use is refused. Concurrent uses in one process end the same way: one node enrolled.
func TestEnrollmentTokenSecondUseRefusedByTheLog(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	_, tok := e.issueEnrollmentToken(root, nil)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	replica, err := commands.New(commands.Config{Store: e.store, Pool: e.store.Pool(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, _ := newNodeEnrollment(t, e.store, "edge-a")
	b, _ := newNodeEnrollment(t, e.store, "edge-b")
	// The replica reads the token (a wrong secret: refused, but the stream is now in its cache).
	if _, err := replica.Handlers.EnrollNodeWithToken.Handle(ctx, commands.EnrollNodeWithToken{Token: tok + "x", Node: b}); !errors.Is(err, commands.ErrUnauthenticated) || !errors.Is(err, domain.ErrEnrollmentTokenInvalid) {
		t.Fatalf("a wrong secret: %v", err)
	}
	e.write(http.StatusCreated, http.MethodPost, "/api/v1/nodes", tok, a)
	if _, err := replica.Handlers.EnrollNodeWithToken.Handle(ctx, commands.EnrollNodeWithToken{Token: tok, Node: b}); !errors.Is(err, commands.ErrUnauthenticated) || !errors.Is(err, domain.ErrEnrollmentTokenUsed) {
		t.Fatalf("a second use on another replica: %v", err)
	}

	// Many at once, in one process.
	_, tok = e.issueEnrollmentToken(root, nil)
	const n = 6
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		enroll, _ := newNodeEnrollment(t, e.store, fmt.Sprintf("edge-%d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = e.call(http.MethodPost, "/api/v1/nodes", tok, enroll).status
		}()
	}
	wg.Wait()
	created := 0
	for _, s := range statuses {
		switch s {
		case http.StatusCreated:
			created++
		case http.StatusUnauthorized:
		default:
			t.Fatalf("statuses %v", statuses)
		}
	}
	if created != 1 {
		t.Fatalf("%d nodes enrolled with a single-use token (statuses %v)", created, statuses)
	}
}

// A node enrollment token can do nothing but enroll a node: every route of the API (enumerated
// from the router, so a route added later is covered) answers it 401 or 403, except the routes
// that take no credential at all (public in the OpenAPI document) and POST /api/v1/nodes. The
// token stays unused throughout, and then enrolls a node.
func TestEnrollmentTokenCannotDoAnythingElse(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	id, tok := e.issueEnrollmentToken(root, api.EnrollmentTokenInput{Uses: 5})
	var doc struct {
		Paths map[string]map[string]struct {
			Security []any `json:"security"`
		} `json:"paths"`
	}
	e.must(http.StatusOK, http.MethodGet, "/api/v1/openapi.json", "", nil).decode(t, &doc)
	pathArgs := strings.NewReplacer("{id}", id, "{org}", "acme", "{user_id}", "root", "{role}", "superadmin", "{name}", "nodes")
	checked := 0
	for _, route := range e.api.Routes() {
		method, path, _ := strings.Cut(route, " ")
		op, ok := doc.Paths[path][strings.ToLower(method)]
		if !ok {
			t.Errorf("%s is not in the OpenAPI document", route)
			continue
		}
		if op.Security != nil && len(op.Security) == 0 || route == "POST /api/v1/nodes" {
			continue // public, or the enrollment itself
		}
		var body any
		if method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
			body = "{}"
		}
		r := e.call(method, pathArgs.Replace(path), tok, body)
		if r.status != http.StatusUnauthorized && r.status != http.StatusForbidden {
			t.Errorf("%s with a node enrollment token: %d, want 401 or 403: %s", route, r.status, r.body)
		}
		checked++
	}
	if checked < 30 {
		t.Fatalf("only %d routes checked", checked)
	}
	if got := e.enrollmentToken(root, id); got.State != "active" || len(got.Nodes) != 0 {
		t.Fatalf("the token after every other route: %+v", got)
	}
	enroll, _ := newNodeEnrollment(t, e.store, "edge-1")
	e.write(http.StatusCreated, http.MethodPost, "/api/v1/nodes", tok, enroll)
}

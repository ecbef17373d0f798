package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// Junk of the probe's kinds, and more, sent to every route of the admin API and to the node's
// ingress: random methods, paths, bodies, binary-ish and huge header values (a 17,000-byte
// User-Agent among them), and 10,001 tokens shaped like JWTs with distinct subjects and bad
// signatures. Afterwards an ordinary denial still reaches the audit log within the flush window,
// the auditor never held more aggregates than its bound, and the heap did not grow with the junk.
func TestAuditJunkDoesNotStopTheAuditLog(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	// Not parallel: the test measures the heap.
	const (
		seed          = 20261202
		distinctSubs  = 10_001 // one more than the store takes in one append (the probe's count)
		apiJunk       = 1_000
		ingressJunk   = 1_000
		workers       = 8
		flushWindow   = 10 * time.Second // startTestServe keeps the default audit flush interval
		margin        = 5 * time.Second
		maxHeapGrowth = 64 << 20
	)
	sv, _ := startTestServe(t)
	routes := openAPIRoutes(t, sv.CP.URL)
	kid := sv.CP.Service.TokenKey().ID()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()

	var next, maxHeld atomic.Int64
	var mu sync.Mutex
	statuses := map[string]int{}
	total := distinctSubs + apiJunk + ingressJunk
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(total) {
					return
				}
				// Each request from its own stream of the seed: the same junk whatever the order.
				rng := rand.New(rand.NewPCG(seed, uint64(i)))
				var req *http.Request
				switch {
				case i < distinctSubs:
					req = forgedTokenRequest(rng, sv.CP.URL, routes, "Bearer "+forgedJWT(rng, fmt.Sprintf("junk-%05d-%s", i, junkText(rng, 1+rng.IntN(24))), kid))
				case i < distinctSubs+apiJunk:
					req = junkAPIRequest(rng, sv.CP.URL, routes, junkBearer(rng, kid))
				default:
					req = junkIngressRequest(rng, sv.Node.URL, junkBearer(rng, kid))
				}
				kind := "api"
				if i >= distinctSubs+apiJunk {
					kind = "ingress"
				}
				status := "error"
				if resp, err := client.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = fmt.Sprint(resp.StatusCode)
				}
				d, f := sv.CP.Service.Auditor.Held()
				for held := int64(max(d, f)); ; {
					cur := maxHeld.Load()
					if held <= cur || maxHeld.CompareAndSwap(cur, held) {
						break
					}
				}
				mu.Lock()
				statuses[kind+" "+status]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	client.CloseIdleConnections()
	after := heap()
	t.Logf("%d junk requests in %s; answers %v; heap %d MiB → %d MiB; at most %d aggregates held", total, time.Since(start).Round(time.Millisecond),
		statuses, before>>20, after>>20, maxHeld.Load())
	if after > before && after-before > maxHeapGrowth {
		t.Errorf("the heap grew by %d MiB with the junk, want less than %d MiB", (after-before)>>20, maxHeapGrowth>>20)
	}
	if maxHeld.Load() > commands.AuditMaxKeys {
		t.Errorf("the auditor held %d aggregates of a kind, more than its bound %d", maxHeld.Load(), commands.AuditMaxKeys)
	}
	if statuses["api 401"] < distinctSubs {
		t.Errorf("%d forged tokens refused with 401, want at least %d: the junk did not reach authentication", statuses["api 401"], distinctSubs)
	}

	// An ordinary denial: a user with a valid token and no role asks for the node list.
	victim := "auditjunk-victim"
	raw, err := token.MintUser(sv.CP.Service.TokenKey(), token.DefaultIssuer, victim, "", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, sv.CP.URL+"/api/v1/nodes", nil)
	req.Header.Set("Authorization", "Bearer "+raw)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a user without a role asking for the nodes: %d, want 403", resp.StatusCode)
	}
	deniedAt := time.Now()

	// Searched as an auditor would: a superadmin's audit search.
	ctx := context.Background()
	if _, err := sv.CP.Service.GrantDirect(commands.WithActor(ctx, commands.Actor{ID: "auditjunk-root"}),
		commands.AssignRole{OrgID: domain.PlatformOrg, UserID: "auditjunk-root", Role: domain.RoleSuperadmin}); err != nil {
		t.Fatal(err)
	}
	root, err := token.MintUser(sv.CP.Service.TokenKey(), token.DefaultIssuer, "auditjunk-root", "", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	search := sv.CP.URL + "/api/v1/audit?org=*&type=" + domain.TypeAccessDenied + "&actor=" + victim
	poll.Until(t, flushWindow+margin, "the denial in the audit log", func() bool {
		req, _ := http.NewRequest(http.MethodGet, search, nil)
		req.Header.Set("Authorization", "Bearer "+root)
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var l api.List[api.AuditEntry]
		return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&l) == nil && len(l.Items) == 1
	})
	t.Logf("the denial was searchable %s after it happened", time.Since(deniedAt).Round(time.Millisecond))
	// The node still serves its tunnel after the junk it was sent.
	generate(t, sv, "afterjunk")
}

// apiRoute is an operation; public ones take no bearer token (security: []).
type apiRoute struct {
	method, path string
	public       bool
}

// openAPIRoutes lists every operation of the API's own OpenAPI document.
func openAPIRoutes(t *testing.T, base string) []apiRoute {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Paths map[string]map[string]struct {
			Security []any `json:"security"`
		} `json:"paths"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	var out []apiRoute
	for path, ops := range doc.Paths {
		for method, op := range ops {
			out = append(out, apiRoute{strings.ToUpper(method), path, op.Security != nil && len(op.Security) == 0})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path+out[i].method < out[j].path+out[j].method }) // the seed decides, not map order
	if len(out) < 20 {
		t.Fatalf("the OpenAPI document lists %d operations", len(out))
	}
	return out
}

var junkMethods = []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "PROPFIND", "FOO"}

// headerBytes are the bytes a header value may carry: printable ASCII, tab and obs-text
// (0x80–0xff, so the junk is invalid UTF-8 too).
var headerBytes = func() []byte {
	b := []byte{'\t'}
	for c := 0x20; c <= 0xff; c++ {
		if c != 0x7f {
			b = append(b, byte(c))
		}
	}
	return b
}()

// junkText is n random bytes that may travel in a header value.
func junkText(rng *rand.Rand, n int) string {
	b := junkBytes(rng, n)
	for i, c := range b {
		b[i] = headerBytes[int(c)%len(headerBytes)]
	}
	return string(b)
}

// junkBytes is n random bytes, eight from each draw (the race detector makes a draw per byte
// slow).
func junkBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	return b[:n]
}

// forgedJWT is a token shaped like the control plane's (EdDSA, a key id) with a bad signature.
// The subject may carry anything JSON can: NUL, invalid UTF-8, kilobytes.
func forgedJWT(rng *rand.Rand, sub, kid string) string {
	if rng.IntN(3) == 0 {
		kid = junkText(rng, 8) // an unknown key id: the API reloads its keys, at most once a second
	}
	if rng.IntN(10) == 0 {
		sub += "\x00" + strings.Repeat("S", rng.IntN(8<<10))
	}
	h, _ := json.Marshal(map[string]any{"alg": "EdDSA", "typ": "JWT", "kid": kid})
	c, _ := json.Marshal(map[string]any{"sub": sub, "iss": token.DefaultIssuer, "exp": time.Now().Add(time.Hour).Unix()})
	sig := junkBytes(rng, 64)
	enc := base64.RawURLEncoding.EncodeToString
	return enc(h) + "." + enc(c) + "." + enc(sig)
}

// junkBearer is an Authorization value: none, junk, or a forged token.
func junkBearer(rng *rand.Rand, kid string) string {
	switch rng.IntN(5) {
	case 0:
		return ""
	case 1:
		return "Basic " + junkText(rng, rng.IntN(64))
	case 2:
		return "Bearer " + junkText(rng, rng.IntN(512))
	default:
		return "Bearer " + forgedJWT(rng, junkText(rng, rng.IntN(300)), kid)
	}
}

// junkSegment is a path segment: a UUID, junk (escaped), or kilobytes of it.
func junkSegment(rng *rand.Rand) string {
	switch rng.IntN(4) {
	case 0:
		return fmt.Sprintf("%08x-%04x-7%03x-8%03x-%012x", rng.Uint32(), rng.IntN(1<<16), rng.IntN(1<<12), rng.IntN(1<<12), rng.Uint64()&(1<<48-1))
	case 1:
		return url.PathEscape(junkText(rng, 1+rng.IntN(4<<10)))
	default:
		return url.PathEscape(junkText(rng, 1+rng.IntN(32)))
	}
}

// junkHeaders sets random headers on req, among them the ones the API reads.
func junkHeaders(rng *rand.Rand, req *http.Request) {
	names := []string{"X-Request-ID", "X-Correlation-ID", "Idempotency-Key", "If-Match", "Content-Type", "Accept", "X-Forwarded-For",
		"Cookie", "Origin", "Host-Junk"}
	for range rng.IntN(6) {
		name := names[rng.IntN(len(names))]
		if rng.IntN(4) == 0 {
			name = fmt.Sprintf("X-Junk-%d", rng.IntN(1000))
		}
		req.Header.Set(name, junkText(rng, rng.IntN(2<<10)))
	}
	switch rng.IntN(10) {
	case 0, 1:
		req.Header.Set("User-Agent", strings.Repeat("U", 17_000))
	case 2, 3, 4:
		req.Header.Set("User-Agent", junkText(rng, rng.IntN(1<<10)))
	}
}

func junkBody(rng *rand.Rand) io.Reader {
	switch rng.IntN(4) {
	case 0:
		return nil
	case 1:
		return strings.NewReader(`{"name":"` + url.QueryEscape(junkText(rng, rng.IntN(200))) + `","owner":"x","upstream":"http://127.0.0.1:1"}`)
	default:
		return bytes.NewReader(junkBytes(rng, rng.IntN(8<<10)))
	}
}

// junkAPIRequest is a request to the API: anything, with the given Authorization.
func junkAPIRequest(rng *rand.Rand, base string, routes []apiRoute, authz string) *http.Request {
	r := routes[rng.IntN(len(routes))]
	method, path := r.method, fillParams(rng, r.path, junkSegment)
	switch rng.IntN(4) {
	case 0:
		method = junkMethods[rng.IntN(len(junkMethods))]
	case 1:
		path = "/api/v1/" + junkSegment(rng) + "/" + junkSegment(rng)
	case 2:
		path = "/" + junkSegment(rng)
	}
	if rng.IntN(3) == 0 {
		q := url.Values{}
		for range 1 + rng.IntN(4) {
			q.Set([]string{"org", "limit", "cursor", "wait_for", "type", "actor", junkText(rng, 4)}[rng.IntN(7)], junkText(rng, rng.IntN(300)))
		}
		path += "?" + q.Encode()
	}
	req, err := http.NewRequest(method, base+path, junkBody(rng))
	if err != nil {
		panic(fmt.Sprintf("junk request %s %q: %v", method, path, err)) // the junk is built to be sendable
	}
	junkHeaders(rng, req)
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	return req
}

// forgedTokenRequest sends a forged token to an authenticated route, so that it reaches
// authentication. It carries little else: the other junk covers the rest, and the race
// detector makes every byte dear.
func forgedTokenRequest(rng *rand.Rand, base string, routes []apiRoute, authz string) *http.Request {
	var r apiRoute
	for r.path == "" || !strings.HasPrefix(r.path, "/api/v1/") || r.public {
		r = routes[rng.IntN(len(routes))]
	}
	path := fillParams(rng, r.path, func(rng *rand.Rand) string { return url.PathEscape(junkText(rng, 1+rng.IntN(16))) })
	req, err := http.NewRequest(r.method, base+path, nil)
	if err != nil {
		panic(fmt.Sprintf("junk request %s %q: %v", r.method, path, err))
	}
	if rng.IntN(20) == 0 {
		req.Header.Set("User-Agent", strings.Repeat("U", 17_000))
	}
	req.Header.Set("Authorization", authz)
	return req
}

// fillParams replaces the {parameters} of an OpenAPI path.
func fillParams(rng *rand.Rand, path string, value func(*rand.Rand) string) string {
	for strings.Contains(path, "{") {
		i, j := strings.Index(path, "{"), strings.Index(path, "}")
		path = path[:i] + value(rng) + path[j+1:]
	}
	return path
}

// junkIngressRequest is a request to the node's ingress, under /t/.
func junkIngressRequest(rng *rand.Rand, base, authz string) *http.Request {
	path := "/t/" + junkSegment(rng)
	for range rng.IntN(4) {
		path += "/" + junkSegment(rng)
	}
	if rng.IntN(4) == 0 {
		path = "/t/llm.demo/" + junkSegment(rng)
	}
	req, err := http.NewRequest(junkMethods[rng.IntN(len(junkMethods))], base+path, junkBody(rng))
	if err != nil {
		panic(fmt.Sprintf("junk ingress request %q: %v", path, err))
	}
	junkHeaders(rng, req)
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	return req
}

package node_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
)

// What the upstream sees and sends back through the proxy: hop-by-hop headers stay on their
// hop, trailers arrive, forged forwarding headers are replaced.
func TestProxyHeadersAndTrailers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	seen := make(chan http.Header, 1)
	up := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		w.Header().Set("Trailer", "X-Checksum")
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "must not reach the caller")
		w.WriteHeader(200)
		io.WriteString(w, "body")
		w.Header().Set("X-Checksum", "abc")
	}))
	e.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = up })
	e.waitHeld("tun-llm")
	req := e.request("GET", "/t/llm/x", nil, e.alice)
	req.Header.Set("Connection", "X-Private")
	req.Header.Set("X-Private", "hop only")
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	req.Header.Set("Proxy-Authorization", "Basic c2VjcmV0")
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	h := <-seen
	if h.Get("X-Private") != "" || h.Get("Proxy-Authorization") != "" || h.Get("Authorization") != "" {
		t.Fatalf("hop-by-hop or credential headers reached the upstream: %v", h)
	}
	if h.Get("X-Forwarded-For") != "127.0.0.1" || h.Get("X-Forwarded-Proto") != "http" {
		t.Fatalf("forwarding headers %v", h)
	}
	if string(body) != "body" || resp.Header.Get("X-Hop") != "" || resp.Trailer.Get("X-Checksum") != "abc" {
		t.Fatalf("response %q headers %v trailers %v", body, resp.Header, resp.Trailer)
	}
}

func TestBodyLimitIsEnforced(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withNodeConfig(func(c *node.Config) { c.MaxRequestBody = 1000 }))
	e.startAgent("tun-llm", nil)
	e.waitHeld("tun-llm")
	// Declared too large: refused before anything is forwarded.
	status, h, body := e.do(e.request("POST", "/t/llm/echo", strings.NewReader(strings.Repeat("x", 1001)), e.alice))
	mustProblem(t, status, h, body, http.StatusRequestEntityTooLarge)
	// Streamed (no length) past the limit: cut off.
	req := e.request("POST", "/t/llm/echo", io.MultiReader(strings.NewReader(strings.Repeat("y", 5000))), e.alice)
	req.ContentLength = -1
	resp, err := e.client.Do(req)
	if err == nil {
		b, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && rerr == nil && len(b) == 5000 {
			t.Fatal("a 5000-byte streamed body passed a 1000-byte limit")
		}
	}
	status, _, _ = e.do(e.request("POST", "/t/llm/echo", strings.NewReader(strings.Repeat("z", 1000)), e.alice))
	if status != 200 {
		t.Fatalf("a body at the limit: %d", status)
	}
}

// A caller that hangs up mid-stream stops the upstream: a model does not generate for nobody.
func TestCallerHangupStopsTheUpstream(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stopped := make(chan struct{})
	up := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		for i := 0; ; i++ {
			if _, err := fmt.Fprintf(w, "token %d\n", i); err != nil {
				close(stopped)
				return
			}
			rc.Flush()
			select {
			case <-r.Context().Done():
				close(stopped)
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}))
	e.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = up })
	e.waitHeld("tun-llm")
	ctx, cancel := context.WithCancel(context.Background())
	req := e.request("GET", "/t/llm/stream", nil, e.alice).WithContext(ctx)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "token 0\n" {
		t.Fatalf("first token %q %v", line, err)
	}
	cancel()
	resp.Body.Close()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream kept generating after the caller left")
	}
}

func TestSlowUpstreamTimesOutWith504(t *testing.T) {
	e := newEnv(t, withNodeConfig(func(c *node.Config) { c.ResponseHeaderTimeout = 100 * time.Millisecond }))
	release := make(chan struct{})
	up := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer close(release)
	e.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = up })
	e.waitHeld("tun-llm")
	start := time.Now()
	status, h, body := e.do(e.request("GET", "/t/llm/slow", nil, e.alice))
	mustProblem(t, status, h, body, http.StatusGatewayTimeout)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}

// Responses without a body keep their framing: HEAD keeps the length the upstream announced,
// 204 and 304 carry nothing, cookies and the status text pass, and the channel stays usable.
func TestBodilessResponsesAndHeaderLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withNodeConfig(func(c *node.Config) { c.MaxHeaderBytes = 8 << 10 }))
	up := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "a", Value: "1"})
		http.SetCookie(w, &http.Cookie{Name: "b", Value: "2"})
		switch r.URL.Path {
		case "/head":
			w.Header().Set("Content-Length", "12345")
			w.WriteHeader(200)
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/notmodified":
			w.WriteHeader(http.StatusNotModified)
		default:
			io.WriteString(w, r.Method+" "+r.URL.RequestURI())
		}
	}))
	e.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = up })
	e.waitHeld("tun-llm")

	resp, err := e.client.Do(e.request("HEAD", "/t/llm/head", nil, e.alice))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != 12345 || len(resp.Cookies()) != 2 {
		t.Fatalf("HEAD: %d length %d cookies %v", resp.StatusCode, resp.ContentLength, resp.Cookies())
	}
	for _, c := range []struct {
		path string
		code int
	}{{"/empty", 204}, {"/notmodified", 304}} {
		status, _, body := e.do(e.request("GET", "/t/llm"+c.path, nil, e.alice))
		if status != c.code || len(body) != 0 {
			t.Fatalf("%s: %d %q", c.path, status, body)
		}
	}
	// After all of that, the pooled channels still carry requests correctly.
	for i := range 5 {
		status, _, body := e.do(e.request("GET", fmt.Sprintf("/t/llm/after?i=%d", i), nil, e.alice))
		if want := fmt.Sprintf("GET /after?i=%d", i); status != 200 || string(body) != want {
			t.Fatalf("after: %d %q, want %q", status, body, want)
		}
	}
	// Request headers beyond MaxHeaderBytes are refused with a problem, not forwarded.
	req := e.request("GET", "/t/llm/big", nil, e.alice)
	req.Header.Set("X-Big", strings.Repeat("x", 10<<10))
	status, h, body := e.do(req)
	mustProblem(t, status, h, body, http.StatusRequestHeaderFieldsTooLarge)
}

// The header-read limit bounds reading a request's header only: a response that streams longer,
// and an upload slower than it, both complete, and the connection then carries the next request.
func TestHeaderTimeoutBoundsOnlyTheHeader(t *testing.T) {
	e := newEnv(t, withNodeConfig(func(c *node.Config) { c.HeaderTimeout = 200 * time.Millisecond }))
	up := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%d", len(b))
			return
		}
		rc := http.NewResponseController(w)
		for i := range 6 {
			fmt.Fprintf(w, "token %d\n", i)
			rc.Flush()
			time.Sleep(100 * time.Millisecond)
		}
	}))
	e.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = up })
	e.waitHeld("tun-llm")
	status, _, body := e.do(e.request("GET", "/t/llm/stream", nil, e.alice))
	if status != 200 || strings.Count(string(body), "token") != 6 {
		t.Fatalf("stream: %d %q", status, body)
	}
	pr, pw := io.Pipe()
	go func() {
		for range 5 {
			pw.Write([]byte(strings.Repeat("u", 1000)))
			time.Sleep(100 * time.Millisecond)
		}
		pw.Close()
	}()
	req := e.request("POST", "/t/llm/upload", pr, e.alice)
	req.ContentLength = -1
	status, _, body = e.do(req)
	if status != 200 || string(body) != "5000" {
		t.Fatalf("slow upload: %d %q", status, body)
	}
	status, _, body = e.do(e.request("GET", "/t/llm/stream", nil, e.alice))
	if status != 200 || strings.Count(string(body), "token") != 6 {
		t.Fatalf("next request: %d %q", status, body)
	}
}

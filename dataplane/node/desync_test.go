//go:build linux

package node_test

// The desync harness. Two callers of different users share one tunnel, whose channels the node
// pools: the attacker (A) sends malformed and ambiguous requests, the victim (B) ordinary ones,
// and real upstreams (Go's net/http, Python's http.server, Node's http, uvicorn on h11) log every
// request they parsed. Each request carries a unique X-Req-Id, and every upstream answers with
// X-Upstream-Saw naming the request it answered. A desync is any of:
//   - a caller receives an answer to a request it did not send, or out of order;
//   - an upstream parses a request nobody sent as one: a request inside a body, a request glued
//     onto another caller's bytes, a request with a method or target its caller did not send;
//   - a caller is told its request was answered by the upstream although the upstream never
//     parsed it.
//
// What counts as "a request the caller sent" is decided by walkRequests, a deliberately strict
// reading of RFC 9112: bytes inside a well-framed body are never a request; after a message whose
// framing is unrecoverable (CL and TE together, a bad Content-Length or Transfer-Encoding) nothing
// is; after a message with a malformed head the node may refuse or read on (noted, not failed),
// but the upstream must never parse those bytes raw (what it would do is visible: the node strips
// /t/llm and Authorization, raw caller bytes keep both).
//
// `go test` runs the corpus and a few mutations with a fixed seed; TUNNELPLANE_DESYNC_ITERATIONS
// sets the number of mutations (and picks a random seed unless TUNNELPLANE_DESYNC_SEED is set).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

const (
	desyncPrefix = "/t/llm" // the path routing of tunnel "llm"; the node strips it
	desyncHost   = "desync.test"
	// desyncUpstreamWait bounds the node's wait for an upstream's answer: an upstream that reads
	// a request differently from the node may wait for bytes that never come.
	desyncUpstreamWait = 2 * time.Second
	// desyncAnswerWait bounds a caller's wait for the node: past it the node has hung.
	desyncAnswerWait = 10 * time.Second
	desyncVictimUser = "victim"
	desyncMallory    = "mallory"
	desyncDefaultMut = 150 // mutations in a plain `go test`
	desyncMaxFails   = 300
)

// desyncAuthorizer lets the harness's callers use every tunnel, each as its own user.
type desyncAuthorizer map[string]string // bearer token → user id

func (a desyncAuthorizer) AuthenticateCaller(_ context.Context, bearer string) (node.Principal, error) {
	if u, ok := a[bearer]; ok {
		return node.Principal{UserID: u}, nil
	}
	return node.Principal{}, fmt.Errorf("%w: unknown token", node.ErrUnauthenticated)
}

func (a desyncAuthorizer) AuthorizeIngress(context.Context, node.Principal, node.Route) error {
	return nil
}

func desyncToken(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// desyncEnv is a node whose tunnel "llm" leads to upstreamAddr, and the bearer tokens of the
// attacker and the victim.
func desyncEnv(t *testing.T, upstreamAddr string) (e *env, tokA, tokB string) {
	t.Helper()
	tokA, tokB = desyncToken(t, 16), desyncToken(t, 16)
	e = newEnv(t, withNodeConfig(func(c *node.Config) {
		c.Authorizer = desyncAuthorizer{tokA: desyncMallory, tokB: desyncVictimUser}
		c.ResponseHeaderTimeout = desyncUpstreamWait
	}))
	e.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = "http://" + upstreamAddr })
	e.waitHeld("tun-llm")
	return e, tokA, tokB
}

// ---- Upstreams ----

// upstreamRecord is one line of an upstream's log: "head" once it parsed a request's head, "done" once
// it read the body.
type upstreamRecord struct {
	Ev      string `json:"ev"`
	Seq     int64  `json:"seq"`
	Method  string `json:"method"`
	Target  string `json:"target"`
	ID      string `json:"id"`
	Cookie  string `json:"cookie"`
	Auth    string `json:"auth"`
	Host    string `json:"host"`
	BodyLen int64  `json:"body_len"`
}

type upstreamLog struct {
	mu   sync.Mutex
	recs []upstreamRecord
	bad  []string // lines that are not records (a crash's traceback)
}

func (l *upstreamLog) add(r upstreamRecord) {
	l.mu.Lock()
	l.recs = append(l.recs, r)
	l.mu.Unlock()
}

func (l *upstreamLog) addBad(s string) {
	l.mu.Lock()
	if len(l.bad) < 50 {
		l.bad = append(l.bad, s)
	}
	l.mu.Unlock()
}

func (l *upstreamLog) snapshot() ([]upstreamRecord, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]upstreamRecord(nil), l.recs...), append([]string(nil), l.bad...)
}

// desyncEcho is what every harness upstream answers.
type desyncEcho struct {
	ID      string `json:"id"`
	Method  string `json:"method"`
	Path    string `json:"path"`
	BodyLen int64  `json:"body_len"`
}

type desyncUpstream struct {
	name  string
	start func(t *testing.T, log *upstreamLog) string // returns host:port
}

var desyncUpstreams = []desyncUpstream{
	{"go-net-http", startGoEcho},
	{"python-http.server", func(t *testing.T, log *upstreamLog) string {
		requireTool(t, "/usr/bin/python3", exec.Command("/usr/bin/python3", "-c", "import http.server").Run())
		return startProcEcho(t, log, "/usr/bin/python3", upstreamScript("echo_server.py"))
	}},
	{"node-http", func(t *testing.T, log *upstreamLog) string {
		requireTool(t, "/usr/bin/node", exec.Command("/usr/bin/node", "--version").Run())
		return startProcEcho(t, log, "/usr/bin/node", upstreamScript("echo_server.js"))
	}},
	{"uvicorn-h11", func(t *testing.T, log *upstreamLog) string {
		requireTool(t, "uvicorn and h11 for /usr/bin/python3 (Debian: python3-uvicorn python3-h11)",
			exec.Command("/usr/bin/python3", "-c", "import uvicorn, h11").Run())
		return startProcEcho(t, log, "/usr/bin/python3", upstreamScript("echo_uvicorn.py"))
	}},
}

// requireTool skips a missing upstream on a developer's machine; CI must have them all.
func requireTool(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "" {
		t.Skipf("%s is not available (%v); CI runs this upstream", what, err)
	}
	t.Fatalf("%s is not available: %v", what, err)
}

func upstreamScript(name string) string {
	p, err := filepath.Abs(filepath.Join("testdata", "upstreams", name))
	if err != nil {
		panic(err)
	}
	return p
}

func startGoEcho(t *testing.T, log *upstreamLog) string {
	var seq atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := upstreamRecord{Ev: "head", Seq: seq.Add(1), Method: r.Method, Target: r.RequestURI, ID: r.Header.Get("X-Req-Id"),
			Cookie: r.Header.Get("Cookie"), Auth: r.Header.Get("Authorization"), Host: r.Host}
		log.add(rec)
		n, _ := io.Copy(io.Discard, r.Body)
		rec.Ev, rec.BodyLen = "done", n
		log.add(rec)
		body, _ := json.Marshal(desyncEcho{ID: rec.ID, Method: r.Method, Path: r.RequestURI, BodyLen: n})
		w.Header().Set("X-Upstream-Saw", rec.ID)
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(r.RequestURI, "chunked") {
			// Flushing before the end makes net/http frame the answer chunked.
			w.Write(body[:len(body)/2])
			http.NewResponseController(w).Flush()
			w.Write(body[len(body)/2:])
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// desyncStderr collects a subprocess's stderr.
type desyncStderr struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *desyncStderr) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 64<<10 {
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *desyncStderr) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startProcEcho runs a script upstream: it prints "LISTENING <port>", then one JSON record per
// line. It is killed at cleanup, and by the kernel if this process dies first.
func startProcEcho(t *testing.T, log *upstreamLog, argv ...string) string {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr := &desyncStderr{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}
	port := make(chan string, 1)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 8<<20)
		for sc.Scan() {
			line := sc.Text()
			if p, ok := strings.CutPrefix(line, "LISTENING "); ok {
				select {
				case port <- p:
				default:
				}
				continue
			}
			var r upstreamRecord
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				log.addBad(line)
				continue
			}
			// The scripts log strings as their servers decoded them, ISO-8859-1: back to bytes.
			r.Method, r.Target, r.ID = fromLatin1(r.Method), fromLatin1(r.Target), fromLatin1(r.ID)
			r.Cookie, r.Auth, r.Host = fromLatin1(r.Cookie), fromLatin1(r.Auth), fromLatin1(r.Host)
			log.add(r)
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-readDone
		_ = cmd.Wait()
		if _, bad := log.snapshot(); len(bad) > 0 || t.Failed() {
			// Its end says why it stopped, if it did; broken pipes from channels the node closed
			// are expected before that.
			if s := stderr.String(); s != "" {
				if len(s) > 4000 {
					s = "…" + s[len(s)-4000:]
				}
				t.Logf("%s stderr:\n%s", filepath.Base(argv[len(argv)-1]), s)
			}
		}
	})
	select {
	case p := <-port:
		return "127.0.0.1:" + p
	case <-readDone:
		t.Fatalf("%v exited before it listened: %s", argv, stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("%v did not listen within 30s: %s", argv, stderr)
	}
	return ""
}

func fromLatin1(s string) string {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r < 256 {
			b = append(b, byte(r))
		} else {
			b = append(b, string(r)...)
		}
	}
	return string(b)
}

// ---- The reference reading of the callers' bytes ----

type desyncZone string

const (
	desyncReal      desyncZone = "real"      // a request head the caller sent
	desyncBody      desyncZone = "body"      // inside a well-framed body: never a request
	desyncForbidden desyncZone = "forbidden" // after a message with unrecoverable framing: never a request
	desyncUnknown   desyncZone = "unknown"   // after a message some parsers read differently
)

type desyncHead struct {
	method, target, id string
}

type desyncWalk struct {
	heads    []desyncHead
	tailFrom int        // where the bytes after the last message walked begin
	tail     desyncZone // what they are
}

// walkRequests reads raw as a strict HTTP/1.1 server would, message by message, and stops where
// strictness ends: after a message with a malformed head (desyncUnknown), after one whose framing
// cannot be trusted (desyncForbidden), or where the connection must close (desyncUnknown).
func walkRequests(raw []byte) desyncWalk {
	var res desyncWalk
	stop := func(at int, z desyncZone) desyncWalk {
		res.tailFrom, res.tail = at, z
		return res
	}
	pos := 0
	for pos < len(raw) {
		start := pos
		clean := true
		var lines [][]byte
		p := pos
		for {
			nl := bytes.IndexByte(raw[p:], '\n')
			if nl < 0 {
				return stop(start, desyncUnknown) // a head that never ends: no request
			}
			line := raw[p : p+nl]
			p += nl + 1
			if len(line) > 0 && line[len(line)-1] == '\r' {
				line = line[:len(line)-1]
			} else {
				clean = false // bare LF
			}
			if bytes.IndexByte(line, '\r') >= 0 {
				clean = false // bare CR
			}
			if len(line) == 0 {
				if len(lines) == 0 {
					clean = false // empty lines before the request line
					continue
				}
				break
			}
			lines = append(lines, line)
		}
		hdrEnd := p
		var h desyncHead
		fields := strings.FieldsFunc(string(lines[0]), func(r rune) bool { return r == ' ' || r == '\t' })
		if len(fields) > 0 {
			h.method = fields[0]
		}
		if len(fields) > 1 {
			h.target = fields[1]
		}
		version := ""
		if len(fields) > 2 {
			version = fields[len(fields)-1]
		}
		if !strictRequestLine(lines[0]) {
			clean = false
		}
		hdr := map[string][]string{}
		for _, l := range lines[1:] {
			if l[0] == ' ' || l[0] == '\t' {
				clean = false // obs-fold
				continue
			}
			name, value, ok := bytes.Cut(l, []byte(":"))
			if !ok || !desyncIsToken(name) {
				clean = false
				if !ok {
					continue
				}
			}
			v := bytes.Trim(value, " \t")
			if !desyncFieldValueOK(v) {
				clean = false
			}
			k := strings.ToLower(string(name))
			hdr[k] = append(hdr[k], string(v))
		}
		if ids := hdr["x-req-id"]; len(ids) > 0 {
			h.id = ids[0]
		}
		res.heads = append(res.heads, h)
		if version == "HTTP/1.1" && len(hdr["host"]) != 1 {
			clean = false
		}
		// A head that parsers read differently: what follows is anybody's guess.
		badFraming := desyncForbidden
		if !clean {
			badFraming = desyncUnknown
		}
		te, cl := hdr["transfer-encoding"], hdr["content-length"]
		bodyEnd := hdrEnd
		switch {
		case len(te) > 0:
			if len(cl) > 0 || version != "HTTP/1.1" || len(te) != 1 || !strings.EqualFold(te[0], "chunked") {
				return stop(hdrEnd, badFraming)
			}
			end, ok := walkChunked(raw, hdrEnd)
			if !ok {
				return stop(hdrEnd, badFraming)
			}
			if end < 0 {
				return stop(len(raw), desyncUnknown) // the body runs to the end
			}
			bodyEnd = end
		case len(cl) > 0:
			n, ok := strictContentLength(cl)
			if !ok {
				return stop(hdrEnd, badFraming)
			}
			if n > int64(len(raw)-hdrEnd) {
				return stop(len(raw), desyncUnknown)
			}
			bodyEnd = hdrEnd + int(n)
		}
		if !clean {
			return stop(hdrEnd, desyncUnknown)
		}
		conn := strings.ToLower(strings.Join(hdr["connection"], ","))
		if (version != "HTTP/1.1" && !strings.Contains(conn, "keep-alive")) || strings.Contains(conn, "close") || len(hdr["upgrade"]) > 0 {
			return stop(bodyEnd, desyncUnknown)
		}
		pos = bodyEnd
	}
	return stop(len(raw), desyncUnknown)
}

func desyncTchar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func desyncIsToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !desyncTchar(c) {
			return false
		}
	}
	return true
}

func desyncFieldValueOK(v []byte) bool {
	for _, c := range v {
		if c != '\t' && (c < 0x20 || c == 0x7f) {
			return false
		}
	}
	return true
}

func strictRequestLine(l []byte) bool {
	parts := bytes.Split(l, []byte(" "))
	if len(parts) != 3 || !desyncIsToken(parts[0]) || len(parts[1]) == 0 {
		return false
	}
	for _, c := range parts[1] {
		if c <= 0x20 || c >= 0x7f || c == '#' {
			return false
		}
	}
	v := string(parts[2])
	return v == "HTTP/1.1" || v == "HTTP/1.0"
}

func strictContentLength(vals []string) (int64, bool) {
	var n int64 = -1
	for _, v := range vals {
		if len(v) == 0 || len(v) > 15 {
			return 0, false
		}
		for _, c := range []byte(v) {
			if c < '0' || c > '9' {
				return 0, false
			}
		}
		m, _ := strconv.ParseInt(v, 10, 64)
		if n >= 0 && m != n {
			return 0, false
		}
		n = m
	}
	return n, true
}

// walkChunked reads a chunked body strictly from p: its end, -1 when it runs past raw, and
// whether it is well-formed.
func walkChunked(raw []byte, p int) (int, bool) {
	line := func() ([]byte, bool, bool) { // line, complete, well-formed
		i := bytes.IndexByte(raw[p:], '\n')
		if i < 0 {
			return nil, false, true
		}
		l := raw[p : p+i]
		p += i + 1
		if len(l) == 0 || l[len(l)-1] != '\r' {
			return nil, true, false
		}
		l = l[:len(l)-1]
		return l, true, bytes.IndexByte(l, '\r') < 0
	}
	for {
		l, complete, ok := line()
		if !complete {
			return -1, true
		}
		if !ok {
			return 0, false
		}
		size, ext, hasExt := bytes.Cut(l, []byte(";"))
		if hasExt {
			for _, c := range ext {
				if !desyncTchar(c) && c != '=' && c != '"' && c != ';' && c != ' ' && c != '\t' {
					return 0, false
				}
			}
		}
		if len(size) == 0 || len(size) > 15 {
			return 0, false
		}
		n, err := strconv.ParseInt(string(size), 16, 64)
		if err != nil || size[0] == '+' || size[0] == '-' {
			return 0, false
		}
		if n == 0 {
			for {
				l, complete, ok := line()
				if !complete {
					return -1, true
				}
				if !ok {
					return 0, false
				}
				if len(l) == 0 {
					return p, true
				}
				name, v, found := bytes.Cut(l, []byte(":"))
				if !found || !desyncIsToken(name) || !desyncFieldValueOK(bytes.Trim(v, " \t")) {
					return 0, false
				}
			}
		}
		if n+2 > int64(len(raw)-p) {
			return -1, true
		}
		if raw[p+int(n)] != '\r' || raw[p+int(n)+1] != '\n' {
			return 0, false
		}
		p += int(n) + 2
	}
}

// desyncUpstreamTarget is the target the upstream should see for a caller's request target: the
// origin form, without the tunnel prefix.
func desyncUpstreamTarget(t string) string {
	if !strings.HasPrefix(t, "/") {
		if i := strings.Index(t, "://"); i >= 0 {
			rest := t[i+3:]
			if j := strings.IndexByte(rest, '/'); j >= 0 {
				t = rest[j:]
			} else {
				t = "/"
			}
		}
	}
	if s, ok := strings.CutPrefix(t, desyncPrefix); ok {
		if s == "" || s[0] != '/' {
			s = "/" + s
		}
		return s
	}
	return t
}

// desyncPathID is the first path segment of an upstream target (the harness puts request ids there).
func desyncPathID(target string) string {
	t := strings.TrimPrefix(target, desyncPrefix)
	t = strings.TrimPrefix(t, "/")
	if i := strings.IndexAny(t, "/?#"); i >= 0 {
		t = t[:i]
	}
	return t
}

// ---- The corpus ----

// desyncEntry is one write of the attacker. Placeholders: {h} (Host, the attacker's
// Authorization and X-Req-Id {id}), {h2}, {h3} (the same for {id2}, {id3}), {auth} (the
// Authorization line), {authlf} (ending in a bare LF), {id}, {id2}, {id3} (ids of requests),
// {smug} (an id that must never reach an upstream as a request), {smugreq} (a whole request
// to /t/llm/{smug} with the attacker's credential, so that both the node and an upstream would
// take it), {smughex} (its length in hex), {len} (the number of bytes after the next blank line).
type desyncEntry struct {
	name string
	tmpl string
	// reject: RFC 9110/9112 require refusing this request (400, or 501 for an unknown coding)
	// or make it unframeable; a node that forwards it lets the upstream decide what it means.
	reject bool
	alts   []string // further upstream targets that are right for {id}
}

const desyncSmugReq = "GET /t/llm/{smug} HTTP/1.1\r\nHost: " + desyncHost + "\r\n{auth}X-Req-Id: {smug}\r\n\r\n"

var desyncCorpus = []desyncEntry{
	// Header names the node must not pass on (RFC 9110 §5.1: a field name is a token; RFC 9112
	// §5.1: no whitespace before the colon). Python's http.server stops reading the head at such
	// a line and never sees the Content-Length the node adds after it.
	{name: "cause A repro: space in a header name, the body opens a request that swallows the next caller's",
		tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}X Foo: bar\r\nContent-Length: {len}\r\n\r\nPOST /attacker-chosen HTTP/1.1\r\nHost: x\r\nX-Pad: ", reject: true},
	{name: "space in a header name, the body is a whole request",
		tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}X Foo: bar\r\nContent-Length: {len}\r\n\r\n{smugreq}", reject: true},
	{name: "space in a header name, the body opens a request with its own id",
		tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}X Foo: bar\r\nContent-Length: {len}\r\n\r\nGET /t/llm/{smug} HTTP/1.1\r\nHost: x\r\n{auth}X-Req-Id: {smug}\r\nX-Pad: ", reject: true},
	{name: "tab in a header name", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}X\tFoo: bar\r\nContent-Length: {len}\r\n\r\n{smugreq}", reject: true},
	{name: "space before the colon", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}X-Foo : bar\r\nContent-Length: {len}\r\n\r\n{smugreq}", reject: true},
	{name: "space before the colon of Content-Length", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Content-Length : {len}\r\n\r\n{smugreq}", reject: true},
	{name: "empty header name", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}: empty\r\nContent-Length: {len}\r\n\r\n{smugreq}", reject: true},
	{name: "header line without a colon", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}NoColonHere\r\nContent-Length: {len}\r\n\r\n{smugreq}", reject: true},
	{name: "@ in a header name", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}X-F@o: bar\r\nContent-Length: {len}\r\n\r\n{smugreq}", reject: true},
	{name: "DEL in a header name", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}X-Foo\x7f: bar\r\nContent-Length: {len}\r\n\r\n{smugreq}", reject: true},
	{name: "UTF-8 in a header name", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}X-F\xc3\xb6o: bar\r\nContent-Length: {len}\r\n\r\n{smugreq}", reject: true},
	{name: "quotes in a header name", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}X-\"Foo\": bar\r\nContent-Length: {len}\r\n\r\n{smugreq}", reject: true},
	{name: "slash in a header name", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}X/Foo: bar\r\nContent-Length: {len}\r\n\r\n{smugreq}", reject: true},
	{name: "NUL in a header name", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}X-N\x00ul: bar\r\nContent-Length: {len}\r\n\r\n{smugreq}", reject: true},
	{name: "no space after the colon (valid)", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}X-Foo:bar\r\nContent-Length:5\r\n\r\nhello"},
	{name: "underscores in a header name (valid token)", tmpl: "GET /t/llm/{id} HTTP/1.1\r\n{h}X_Forwarded_For: 6.6.6.6\r\n\r\n"},
	{name: "Content_Length is not Content-Length: what follows is the next request",
		tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Content_Length: {len}\r\n\r\nGET /t/llm/{id2} HTTP/1.1\r\n{h2}\r\n"},

	// Line folding and line ends (RFC 9112 §2.2, §5.2).
	{name: "obs-fold", tmpl: "GET /t/llm/{id} HTTP/1.1\r\n{h}X-Folded: a\r\n b\r\n\r\n"},
	{name: "obs-fold hiding a Content-Length", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}X-Folded: a\r\n Content-Length: {len}\r\n\r\n{smugreq}"},
	{name: "obs-fold (tab) hiding Transfer-Encoding", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Content-Length: {len}\r\nX-Folded: a\r\n\tTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smugreq}"},
	{name: "Transfer-Encoding folded onto Content-Length", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Content-Length: {len}\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smugreq}"},
	{name: "whitespace before the first header line", tmpl: "GET /t/llm/{id} HTTP/1.1\r\n X-Lead: a\r\n{h}\r\n"},
	{name: "bare LF line ends", tmpl: "GET /t/llm/{id} HTTP/1.1\nHost: " + desyncHost + "\n{authlf}X-Req-Id: {id}\n\n"},
	{name: "bare LF before Content-Length", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}X-Foo: a\nContent-Length: {len}\r\n\r\n{smugreq}"},
	{name: "bare CR before Content-Length", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}X-Foo: a\rContent-Length: {len}\r\n\r\n{smugreq}"},
	{name: "NUL in a value", tmpl: "GET /t/llm/{id} HTTP/1.1\r\n{h}X-Nul: a\x00b\r\n\r\n"},
	{name: "control bytes in a value", tmpl: "GET /t/llm/{id} HTTP/1.1\r\n{h}X-Ctl: a\x01b\x7fc\x1bd\r\n\r\n"},
	{name: "vertical tab and form feed in a value", tmpl: "GET /t/llm/{id} HTTP/1.1\r\n{h}X-Vt: a\x0bb\x0cc\r\n\r\n"},

	// Content-Length (RFC 9112 §6.3: anything but one run of digits, or differing values, is an
	// unrecoverable error).
	{name: "Content-Length twice, same value", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"},
	{name: "Content-Length twice, different values", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Content-Length: 5\r\nContent-Length: {len}\r\n\r\nhello{smugreq}", reject: true},
	{name: "Content-Length list, different values", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Content-Length: 5, {len}\r\n\r\nhello{smugreq}", reject: true},
	{name: "Content-Length list, same value", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Content-Length: 5, 5\r\n\r\nhello"},
	{name: "Content-Length with a plus sign", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Content-Length: +{len}\r\n\r\n{smugreq}", reject: true},
	{name: "Content-Length negative", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Content-Length: -1\r\n\r\n{smugreq}", reject: true},
	{name: "Content-Length with leading zeros (valid)", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Content-Length: 000{len}\r\n\r\nhello"},
	{name: "Content-Length in hex", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Content-Length: 0x5\r\n\r\nhello{smugreq}", reject: true},
	{name: "Content-Length overflowing 64 bits", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Content-Length: 18446744073709551621\r\n\r\nhello{smugreq}", reject: true},
	{name: "Content-Length with a space inside", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Content-Length: 1 0\r\n\r\nhello{smugreq}", reject: true},
	{name: "Content-Length empty", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Content-Length: \r\n\r\n{smugreq}", reject: true},
	{name: "Content-Length with trailing whitespace (valid)", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Content-Length: 5 \r\n\r\nhello"},

	// Transfer-Encoding (RFC 9112 §6.1, §6.3: with Content-Length it wins and the connection must
	// close after; a coding list not ending in chunked is a 400; on HTTP/1.0 the framing is faulty).
	{name: "CL.TE: a body that ends early by TE and carries a request", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Content-Length: {len}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smugreq}"},
	{name: "TE.CL: a chunk that is a request", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{smughex}\r\n{smugreq}\r\n0\r\n\r\n"},
	{name: "GET with Content-Length: 0 and Transfer-Encoding", tmpl: "GET /t/llm/{id} HTTP/1.1\r\n{h}Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smugreq}"},
	{name: "Transfer-Encoding: chunked, identity (chunked not last)", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Transfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n{smugreq}", reject: true},
	{name: "Transfer-Encoding: chunked, identity with Content-Length", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Transfer-Encoding: chunked, identity\r\nContent-Length: {len}\r\n\r\n0\r\n\r\n{smugreq}", reject: true},
	{name: "Transfer-Encoding: Chunked (case is free)", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Transfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
	{name: "Transfer-Encoding with leading whitespace in the value", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Transfer-Encoding:  \tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
	{name: "Transfer-Encoding: xchunked with Content-Length", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Transfer-Encoding: xchunked\r\nContent-Length: {len}\r\n\r\n0\r\n\r\n{smugreq}", reject: true},
	{name: "Transfer-Encoding: identity", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Transfer-Encoding: identity\r\n\r\n{smugreq}", reject: true},
	{name: "Transfer-Encoding twice: chunked then identity", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n{smugreq}", reject: true},
	{name: "Transfer-Encoding twice: identity then chunked", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{smugreq}"},
	{name: "Transfer-Encoding on HTTP/1.0 keep-alive", tmpl: "POST /t/llm/{id} HTTP/1.0\r\n{h}Connection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: {len}\r\n\r\n0\r\n\r\n{smugreq}", reject: true},
	{name: "Transfer-Encoding with a vertical tab", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Transfer-Encoding:\x0bchunked\r\nContent-Length: {len}\r\n\r\n0\r\n\r\n{smugreq}", reject: true},
	{name: "Transfer-Encoding with an empty list element", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Transfer-Encoding: , chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},

	// Chunked bodies.
	{name: "chunk extension", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5;foo=bar\r\nhello\r\n0\r\n\r\n"},
	{name: "chunk extension with a bare LF", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n{smugreq}"},
	{name: "chunk size overflowing 64 bits", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n{smugreq}"},
	{name: "chunk size not hex", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5g\r\nhello\r\n0\r\n\r\n{smugreq}"},
	{name: "chunk size with a 0x prefix", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n{smugreq}"},
	{name: "chunk size with a trailing space", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"},
	{name: "chunk longer than its size", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n{smugreq}"},
	{name: "no last chunk", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"},
	{name: "trailer", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"},
	{name: "framing fields in the trailer", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nContent-Length: 60\r\nTransfer-Encoding: chunked\r\n\r\n"},
	{name: "chunked body, then the next request (valid pipelining)", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /t/llm/{id2} HTTP/1.1\r\n{h2}\r\n"},

	// Bodies that hold whole requests.
	{name: "GET whose body is a request", tmpl: "GET /t/llm/{id} HTTP/1.1\r\n{h}Content-Length: {len}\r\n\r\n{smugreq}"},
	{name: "POST whose body is a request", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Content-Length: {len}\r\n\r\n{smugreq}"},
	{name: "Expect: 100-continue whose body is a request", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Expect: 100-continue\r\nContent-Length: {len}\r\n\r\n{smugreq}"},
	{name: "GET with a chunked body", tmpl: "GET /t/llm/{id} HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
	{name: "GET with a body", tmpl: "GET /t/llm/{id} HTTP/1.1\r\n{h}Content-Length: 5\r\n\r\nhello"},
	{name: "Connection names Content-Length", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Connection: Content-Length\r\nContent-Length: {len}\r\n\r\n{smugreq}"},
	{name: "Connection names Transfer-Encoding", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n{smughex}\r\n{smugreq}\r\n0\r\n\r\n"},

	// Targets, hosts and request lines.
	{name: "absolute form naming another host", tmpl: "GET http://evil.example/t/llm/{id}?q=1 HTTP/1.1\r\n{h}\r\n"},
	{name: "absolute form, https", tmpl: "GET https://" + desyncHost + "/t/llm/{id} HTTP/1.1\r\n{h}\r\n"},
	{name: "Host twice", tmpl: "GET /t/llm/{id} HTTP/1.1\r\n{h}Host: evil.example\r\n\r\n", reject: true},
	{name: "no Host on HTTP/1.1", tmpl: "GET /t/llm/{id} HTTP/1.1\r\n{auth}X-Req-Id: {id}\r\n\r\n", reject: true},
	{name: "request line with double spaces", tmpl: "GET  /t/llm/{id}  HTTP/1.1\r\n{h}\r\n"},
	{name: "request line with tabs", tmpl: "GET\t/t/llm/{id}\tHTTP/1.1\r\n{h}\r\n"},
	{name: "request line with a second version", tmpl: "GET /t/llm/{id} HTTP/1.1 HTTP/1.1\r\n{h}\r\n"},
	{name: "space inside the target", tmpl: "GET /t/llm/{id} HTTP/1.0 /x HTTP/1.1\r\n{h}\r\n"},
	{name: "fragment in the target", tmpl: "GET /t/llm/{id}#frag HTTP/1.1\r\n{h}\r\n", alts: []string{"/{id}#frag"}},
	{name: "raw non-ASCII bytes in the path", tmpl: "GET /t/llm/{id}/caf\xc3\xa9\xff HTTP/1.1\r\n{h}\r\n",
		alts: []string{"/{id}/caf%C3%A9%FF", "/{id}/caf%c3%a9%ff"}},
	{name: "dot segments out of the tunnel prefix", tmpl: "GET /t/llm/../../metrics HTTP/1.1\r\n{h}\r\n", alts: []string{"/metrics"}},
	{name: "dot segments into another tunnel", tmpl: "GET /t/llm/../second/{id} HTTP/1.1\r\n{h}\r\n", alts: []string{"/second/{id}"}},
	{name: "encoded dot segments", tmpl: "GET /t/llm/%2e%2e/%2e%2e/metrics HTTP/1.1\r\n{h}\r\n"},
	{name: "lowercase method", tmpl: "get /t/llm/{id} HTTP/1.1\r\n{h}\r\n"},
	{name: "NUL in the target", tmpl: "GET /t/llm/{id}\x00x HTTP/1.1\r\n{h}\r\n"},

	// Connections.
	{name: "HTTP/1.0 keep-alive, then a second request", tmpl: "GET /t/llm/{id} HTTP/1.0\r\n{h}Connection: keep-alive\r\n\r\nGET /t/llm/{id2} HTTP/1.1\r\n{h2}\r\n"},
	{name: "HTTP/1.0 without keep-alive, then a request", tmpl: "GET /t/llm/{id} HTTP/1.0\r\n{h}\r\n{smugreq}"},
	{name: "Connection: close, then a request", tmpl: "GET /t/llm/{id} HTTP/1.1\r\n{h}Connection: close\r\n\r\n{smugreq}"},
	{name: "Expect: 100-continue", tmpl: "POST /t/llm/{id} HTTP/1.1\r\n{h}Expect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"},
	{name: "Upgrade: h2c", tmpl: "GET /t/llm/{id} HTTP/1.1\r\n{h}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"},
	{name: "Upgrade: websocket the upstream refuses, then a request", tmpl: "GET /t/llm/{id} HTTP/1.1\r\n{h}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n{smugreq}"},
	{name: "two requests in one write", tmpl: "GET /t/llm/{id} HTTP/1.1\r\n{h}\r\nGET /t/llm/{id2}/chunked HTTP/1.1\r\n{h2}\r\n"},
	{name: "three requests in one write, a body in the middle", tmpl: "GET /t/llm/{id} HTTP/1.1\r\n{h}\r\nPOST /t/llm/{id2} HTTP/1.1\r\n{h2}Content-Length: 5\r\n\r\nhelloGET /t/llm/{id3}/chunked HTTP/1.1\r\n{h3}\r\n"},
}

// desyncMutationBases are well-formed requests the mutator damages; the bodies carry requests to
// smuggle.
var desyncMutationBases = []struct{ name, tmpl string }{
	{"get", "GET /t/llm/{id}?m=1 HTTP/1.1\r\nHost: " + desyncHost + "\r\n{auth}X-Req-Id: {id}\r\nAccept: */*\r\nX-Extra: value\r\n\r\n"},
	{"post-cl-smuggle", "POST /t/llm/{id} HTTP/1.1\r\nHost: " + desyncHost + "\r\n{auth}X-Req-Id: {id}\r\nContent-Type: text/plain\r\nContent-Length: {len}\r\n\r\n{smugreq}"},
	{"post-chunked-smuggle", "POST /t/llm/{id}/chunked HTTP/1.1\r\nHost: " + desyncHost + "\r\n{auth}X-Req-Id: {id}\r\nTransfer-Encoding: chunked\r\n\r\n{smughex}\r\n{smugreq}\r\n0\r\n\r\n"},
	{"post-prefix-smuggle", "POST /t/llm/{id} HTTP/1.1\r\nHost: " + desyncHost + "\r\n{auth}X-Req-Id: {id}\r\nX-Extra: value\r\nContent-Length: {len}\r\n\r\nPOST /attacker-chosen HTTP/1.1\r\nHost: x\r\nX-Pad: "},
	{"pipelined", "GET /t/llm/{id} HTTP/1.1\r\nHost: " + desyncHost + "\r\n{auth}X-Req-Id: {id}\r\n\r\nGET /t/llm/{id2}/chunked HTTP/1.1\r\nHost: " + desyncHost + "\r\n{auth}X-Req-Id: {id2}\r\n\r\n"},
}

// expand fills a template for caller c: the bytes and the ids they hold, in order.
func (c *desyncCaller) expand(tmpl string) ([]byte, []string) {
	s := strings.NewReplacer(
		"{h}", "Host: "+desyncHost+"\r\n{auth}X-Req-Id: {id}\r\n",
		"{h2}", "Host: "+desyncHost+"\r\n{auth}X-Req-Id: {id2}\r\n",
		"{h3}", "Host: "+desyncHost+"\r\n{auth}X-Req-Id: {id3}\r\n",
		"{smugreq}", desyncSmugReq,
	).Replace(tmpl)
	var ids []string
	pairs := []string{
		"{auth}", "Authorization: Bearer " + c.bearer + "\r\n",
		"{authlf}", "Authorization: Bearer " + c.bearer + "\n",
	}
	for _, p := range []string{"{id}", "{id2}", "{id3}"} {
		if strings.Contains(s, p) {
			id := c.newID()
			ids = append(ids, id)
			pairs = append(pairs, p, id)
		}
	}
	if strings.Contains(s, "{smug}") {
		id := c.newSmugID()
		ids = append(ids, id)
		pairs = append(pairs, "{smug}", id)
	}
	r := strings.NewReplacer(pairs...)
	s = r.Replace(s)
	s = strings.ReplaceAll(s, "{smughex}", strconv.FormatInt(int64(len(r.Replace(desyncSmugReq))), 16))
	for {
		i := strings.Index(s, "{len}")
		if i < 0 {
			break
		}
		rest := s[i+len("{len}"):]
		j := strings.Index(rest, "\r\n\r\n")
		if j < 0 {
			panic("{len} without a blank line after it")
		}
		s = s[:i] + strconv.Itoa(len(rest)-j-4) + rest
	}
	return []byte(s), ids
}

// ---- Mutations ----

var (
	desyncMutationBytes = []byte{'\r', '\n', ' ', '\t', ':', 0, 0x0b, 0x0c, 0x7f, 0xff, ',', ';', 'a', '0', '"'}
	desyncTEValues      = []string{"chunked", "Chunked", " chunked", "chunked, identity", "identity", "xchunked", "\tchunked", "chunked\x00", "chunked, chunked"}
)

// desyncHeadLines are the [start, end) of each line of the head, end at its '\n'.
func desyncHeadLines(raw []byte) [][2]int {
	var out [][2]int
	p := 0
	for p < len(raw) {
		i := bytes.IndexByte(raw[p:], '\n')
		if i < 0 {
			break
		}
		out = append(out, [2]int{p, p + i})
		if i == 0 || (i == 1 && raw[p] == '\r') {
			break // the blank line
		}
		p += i + 1
	}
	return out
}

// desyncProtected reports the lines the mutator leaves alone inside (their ends may change): the
// request line, the credential and the id, without which nothing would be forwarded or matched.
func desyncProtected(raw []byte, l [2]int, first bool) bool {
	line := raw[l[0]:l[1]]
	return first || bytes.HasPrefix(line, []byte("Authorization:")) || bytes.HasPrefix(line, []byte("X-Req-Id:"))
}

// mutate damages raw at header boundaries, 1 to 3 times, and says how.
func desyncMutate(rng *mrand.Rand, raw []byte) ([]byte, string) {
	var desc []string
	for range 1 + rng.Intn(3) {
		var d string
		raw, d = desyncMutateOnce(rng, raw)
		desc = append(desc, d)
	}
	return raw, strings.Join(desc, "; ")
}

func desyncMutateOnce(rng *mrand.Rand, raw []byte) ([]byte, string) {
	lines := desyncHeadLines(raw)
	if len(lines) < 3 {
		return raw, "none"
	}
	var bounds []int
	for i, l := range lines[:len(lines)-1] {
		if i > 0 {
			bounds = append(bounds, l[0])
		}
		bounds = append(bounds, l[1]) // the '\n'
		if l[1] > l[0] && raw[l[1]-1] == '\r' {
			bounds = append(bounds, l[1]-1)
		}
		if desyncProtected(raw, l, i == 0) {
			continue
		}
		if c := bytes.IndexByte(raw[l[0]:l[1]], ':'); c >= 0 {
			bounds = append(bounds, l[0]+c, l[0]+c+1)
		}
	}
	hdrs := lines[1 : len(lines)-1]
	pick := func(s []int) int { return s[rng.Intn(len(s))] }
	insert := func(at int, b []byte) []byte {
		return append(append(append([]byte(nil), raw[:at]...), b...), raw[at:]...)
	}
	switch op := rng.Intn(9); op {
	case 0, 1:
		at, b := pick(bounds), desyncMutationBytes[rng.Intn(len(desyncMutationBytes))]
		return insert(at, []byte{b}), fmt.Sprintf("insert %q at %d", b, at)
	case 2:
		at, b := pick(bounds), desyncMutationBytes[rng.Intn(len(desyncMutationBytes))]
		out := append([]byte(nil), raw...)
		out[at] = b
		return out, fmt.Sprintf("replace byte %d with %q", at, b)
	case 3:
		at := pick(bounds)
		return append(append([]byte(nil), raw[:at]...), raw[at+1:]...), fmt.Sprintf("delete byte %d", at)
	case 4:
		l := hdrs[rng.Intn(len(hdrs))]
		return insert(l[1]+1, raw[l[0]:l[1]+1]), fmt.Sprintf("repeat line %q", raw[l[0]:l[1]])
	case 5:
		l := hdrs[rng.Intn(len(hdrs))]
		if desyncProtected(raw, l, false) {
			return raw, "none"
		}
		out := append([]byte(nil), raw...)
		for i := l[0]; i < l[1] && out[i] != ':'; i++ {
			if rng.Intn(2) == 0 {
				out[i] = desyncFlipCase(out[i])
			}
		}
		return out, fmt.Sprintf("flip case in %q", raw[l[0]:l[1]])
	case 6:
		i := bytes.Index(raw, []byte("Content-Length: "))
		if i < 0 {
			return raw, "none"
		}
		j := bytes.IndexByte(raw[i:], '\r')
		if j < 0 {
			return raw, "none"
		}
		v := string(raw[i+len("Content-Length: ") : i+j])
		n, _ := strconv.Atoi(v)
		nv := []string{strconv.Itoa(n + 1), strconv.Itoa(n - 1), "0", "0" + v, "+" + v, v + ", " + v, v + ", 0", v + " " + v, "-1",
			strconv.Itoa(n / 2), strconv.Itoa(n + 20), " " + v + " ", v + "\x00"}[rng.Intn(13)]
		out := append(append(append([]byte(nil), raw[:i+len("Content-Length: ")]...), nv...), raw[i+j:]...)
		return out, fmt.Sprintf("Content-Length %s → %q", v, nv)
	case 7:
		l := hdrs[rng.Intn(len(hdrs))]
		te := "Transfer-Encoding: " + desyncTEValues[rng.Intn(len(desyncTEValues))] + "\r\n"
		return insert(l[1]+1, []byte(te)), fmt.Sprintf("add %q", te)
	default:
		host := []string{"Host: evil.example\r\n", "Host:\r\n", "Host : " + desyncHost + "\r\n", " Host: evil.example\r\n"}[rng.Intn(4)]
		l := hdrs[rng.Intn(len(hdrs))]
		return insert(l[1]+1, []byte(host)), fmt.Sprintf("add %q", host)
	}
}

func desyncFlipCase(c byte) byte {
	switch {
	case c >= 'a' && c <= 'z':
		return c - 32
	case c >= 'A' && c <= 'Z':
		return c + 32
	}
	return c
}

// ---- Callers and what they were answered ----

// desyncWrite is one write of a caller: the bytes and what came of them.
type desyncWrite struct {
	label  string
	caller string
	raw    []byte
	ids    []string // in the order they appear
	reject bool
	// forwarded: an answer came from beyond the node (an upstream's, or the node's own about a
	// failed exchange).
	forwarded bool
	answers   []string
}

type desyncSent struct {
	id      string
	zone    desyncZone
	method  string
	targets []string // upstream targets that are right (for desyncReal)
	bodyLen int64    // -1: unchecked
	write   *desyncWrite
}

type desyncRun struct {
	t            *testing.T
	upstream     string
	addr         string // the node's ingress
	upAddr       string // the upstream, for the barrier
	log          *upstreamLog
	victimSecret string // in B's cookie only

	mu       sync.Mutex
	sent     map[string]*desyncSent
	writes   []*desyncWrite
	answered map[string]string // id on a 2xx from an upstream → the caller who received it
	fails    []string
	notes    []string
	noted    map[string]bool
}

func (r *desyncRun) fail(format string, args ...any) {
	r.mu.Lock()
	r.fails = append(r.fails, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *desyncRun) note(format string, args ...any) {
	r.mu.Lock()
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *desyncRun) noteOnce(key, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.noted[key] {
		return
	}
	if r.noted == nil {
		r.noted = map[string]bool{}
	}
	r.noted[key] = true
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

func (r *desyncRun) failed() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.fails)
}

func (r *desyncRun) register(w *desyncWrite, reqs ...*desyncSent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, w)
	for _, s := range reqs {
		s.write = w
		r.sent[s.id] = s
	}
}

func (r *desyncRun) lookup(id string) *desyncSent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sent[id]
}

// whose says where an id came from, for failure messages.
func (r *desyncRun) whose(id string) string {
	s := r.lookup(id)
	switch {
	case id == "":
		return "no id"
	case s == nil:
		return "an id nobody sent"
	case s.zone == desyncReal:
		return fmt.Sprintf("%s's request in %s", s.write.caller, s.write.label)
	}
	return fmt.Sprintf("an id in the %s bytes of %s's %s", s.zone, s.write.caller, s.write.label)
}

func desyncQuote(b []byte) string {
	if len(b) > 700 {
		return strconv.Quote(string(b[:700])) + "…"
	}
	return strconv.Quote(string(b))
}

type desyncCaller struct {
	run    *desyncRun
	name   string // "A" (attacker) or "B" (victim)
	bearer string
	cookie string
	seq    int
	conn   net.Conn
	br     *bufio.Reader
}

// Ids have fixed widths and different shapes, so that none is a substring of another.
func (c *desyncCaller) newID() string     { c.seq++; return fmt.Sprintf("%s-%06d", c.name, c.seq) }
func (c *desyncCaller) newSmugID() string { c.seq++; return fmt.Sprintf("S%s%07d", c.name, c.seq) }

func (c *desyncCaller) reset() {
	if c.conn != nil {
		c.conn.Close()
	}
	c.conn, c.br = nil, nil
}

// desyncAnswer is one response a caller read.
type desyncAnswer struct {
	resp *http.Response
	body []byte
}

func (a desyncAnswer) saw() string { return a.resp.Header.Get("X-Upstream-Saw") }

// nodeProblem reports whether the node itself answered, and its problem slug.
func (a desyncAnswer) nodeProblem() (string, bool) {
	if a.resp.Header.Get("Content-Type") != "application/problem+json" {
		return "", false
	}
	var p struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(a.body, &p) != nil {
		return "", false
	}
	slug, ok := strings.CutPrefix(p.Type, domain.ProblemTypeBase)
	return slug, ok
}

func (a desyncAnswer) String() string {
	if slug, ok := a.nodeProblem(); ok {
		return fmt.Sprintf("node %d %s", a.resp.StatusCode, slug)
	}
	if s := a.saw(); s != "" {
		return fmt.Sprintf("upstream %d for %q", a.resp.StatusCode, s)
	}
	b := a.body
	if len(b) > 60 {
		b = b[:60]
	}
	return fmt.Sprintf("%d without X-Upstream-Saw %q", a.resp.StatusCode, b)
}

// readDesyncAnswer reads the next final response (interim 1xx ones are skipped).
func readDesyncAnswer(br *bufio.Reader, method string) (desyncAnswer, error) {
	for {
		// ReadResponse reports a connection closed between responses as ErrUnexpectedEOF, like
		// one cut inside a response: only the first is a clean end.
		if _, err := br.Peek(1); err != nil {
			return desyncAnswer{}, err
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			return desyncAnswer{}, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return desyncAnswer{}, fmt.Errorf("read the body of a %d: %w", resp.StatusCode, err)
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		return desyncAnswer{resp: resp, body: body}, nil
	}
}

// roundTrip writes raw on the caller's keep-alive connection and reads one answer.
func (c *desyncCaller) roundTrip(raw []byte, method string) (desyncAnswer, error) {
	if c.conn == nil {
		conn, err := net.Dial("tcp", c.run.addr)
		if err != nil {
			return desyncAnswer{}, err
		}
		c.conn, c.br = conn, bufio.NewReader(conn)
	}
	_ = c.conn.SetDeadline(time.Now().Add(desyncAnswerWait))
	if _, err := c.conn.Write(raw); err != nil {
		c.reset()
		return desyncAnswer{}, err
	}
	a, err := readDesyncAnswer(c.br, method)
	if err != nil {
		c.reset()
		return desyncAnswer{}, err
	}
	if a.resp.Close {
		c.reset()
	}
	return a, nil
}

// ordinary sends a well-formed request on the caller's keep-alive connection: it must be
// answered by the upstream, for this request.
func (c *desyncCaller) ordinary(i int) {
	id := c.newID()
	var method, target, body string
	switch i % 3 {
	case 0:
		method, target = "GET", fmt.Sprintf("%s/%s?n=%d", desyncPrefix, id, i)
	case 1:
		method, target = "GET", desyncPrefix+"/"+id+"/chunked"
	default:
		method, target, body = "POST", desyncPrefix+"/"+id, c.name+" sends a small body with "+id
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nX-Req-Id: %s\r\n", method, target, desyncHost, c.bearer, id)
	if c.cookie != "" {
		b.WriteString("Cookie: " + c.cookie + "\r\n")
	}
	if body != "" {
		fmt.Fprintf(&b, "Content-Type: text/plain\r\nContent-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n" + body)
	raw := []byte(b.String())
	w := &desyncWrite{label: "ordinary " + method + " " + id, caller: c.name, raw: raw, ids: []string{id}}
	up := desyncUpstreamTarget(target)
	c.run.register(w, &desyncSent{id: id, zone: desyncReal, method: method, targets: []string{up}, bodyLen: int64(len(body))})
	a, err := c.roundTrip(raw, method)
	if err != nil {
		c.run.fail("%s's ordinary %s %s got no answer: %v\n    sent %s", c.name, method, id, err, desyncQuote(raw))
		return
	}
	w.answers = append(w.answers, a.String())
	saw := a.saw()
	if saw != "" && a.resp.StatusCode/100 == 2 {
		c.run.recordAnswered(saw, c.name)
	}
	var eb desyncEcho
	_ = json.Unmarshal(a.body, &eb)
	if a.resp.StatusCode != 200 || saw != id || eb.ID != id || eb.Method != method || eb.Path != up || eb.BodyLen != int64(len(body)) {
		c.run.fail("%s's ordinary %s %s: want the upstream's 200 for %s (%s %s, %d body bytes); got %s, X-Upstream-Saw %q (%s), body %s\n    sent %s",
			c.name, method, id, id, method, up, len(body), a.resp.Status, saw, c.run.whose(saw), desyncQuote(a.body), desyncQuote(raw))
	}
}

func (r *desyncRun) recordAnswered(id, caller string) {
	r.mu.Lock()
	r.answered[id] = caller
	r.mu.Unlock()
}

// send makes one write of the attacker on a connection of its own, half-closed after it: every
// answer read belongs to these bytes.
func (c *desyncCaller) send(label string, raw []byte, ids []string, reject bool, alts []string) {
	wr := walkRequests(raw)
	w := &desyncWrite{label: label, caller: c.name, raw: raw, ids: ids, reject: reject}
	var reqs []*desyncSent
	isOurs := map[string]bool{}
	for _, id := range ids {
		isOurs[id] = true
	}
	// The heads a strict reading finds, by their X-Req-Id or, when a mutation cost them that,
	// by the id in their path.
	heads := map[string]desyncHead{}
	for _, h := range wr.heads {
		id := h.id
		if !isOurs[id] {
			id = desyncPathID(desyncUpstreamTarget(h.target))
		}
		if _, dup := heads[id]; isOurs[id] && !dup {
			heads[id] = h
		}
	}
	for i, id := range ids {
		s := &desyncSent{id: id, bodyLen: -1}
		if h, ok := heads[id]; ok {
			s.zone, s.method, s.targets = desyncReal, h.method, []string{desyncUpstreamTarget(h.target)}
			if i == 0 {
				for _, a := range alts {
					s.targets = append(s.targets, strings.ReplaceAll(a, "{id}", id))
				}
			}
		} else if bytes.Index(raw, []byte(id)) >= wr.tailFrom {
			s.zone = wr.tail
		} else {
			s.zone = desyncBody
		}
		reqs = append(reqs, s)
	}
	c.run.register(w, reqs...)

	conn, err := net.Dial("tcp", c.run.addr)
	if err != nil {
		c.run.fail("dial the node: %v", err)
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(desyncAnswerWait))
	if _, err := conn.Write(raw); err != nil {
		c.run.note("%s: write: %v", label, err)
		return
	}
	_ = conn.(*net.TCPConn).CloseWrite()
	br := bufio.NewReader(conn)
	method, _, _ := strings.Cut(string(raw), " ")
	last := -1
	for k := 0; ; k++ {
		a, err := readDesyncAnswer(br, method)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.run.fail("%s's %s: the node neither answered nor closed within %v (answers so far: %v)\n    sent %s",
					c.name, label, desyncAnswerWait, w.answers, desyncQuote(raw))
			} else if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) && !strings.Contains(err.Error(), "connection reset") {
				c.run.fail("%s's %s: answer #%d is not HTTP: %v\n    sent %s", c.name, label, k+1, err, desyncQuote(raw))
			}
			break
		}
		w.answers = append(w.answers, a.String())
		saw := a.saw()
		if !isOurs[saw] {
			// A mutation may have cost the request its X-Req-Id (a fold the node may replace with
			// a space, RFC 9112 §5.2, glues the next line onto it); the path the upstream echoes
			// still names the request.
			var eb desyncEcho
			if json.Unmarshal(a.body, &eb) == nil && isOurs[desyncPathID(eb.Path)] {
				saw = desyncPathID(eb.Path)
			}
		}
		slug, byNode := a.nodeProblem()
		switch {
		case saw != "":
			w.forwarded = true
			if a.resp.StatusCode/100 == 2 {
				c.run.recordAnswered(saw, c.name)
			}
			pos := -1
			for i, id := range ids {
				if id == saw {
					pos = i
				}
			}
			s := c.run.lookup(saw)
			if pos <= last || s == nil || (s.zone != desyncReal && s.zone != desyncUnknown) {
				c.run.fail("%s's %s: answer #%d is the upstream's answer to %s (%s); want answers only to the requests of this write, in order (ids %v)\n    sent %s",
					c.name, label, k+1, saw, c.run.whose(saw), ids, desyncQuote(raw))
			}
			last = max(last, pos)
		case byNode:
			w.forwarded = w.forwarded || slug == "tunnel-failed" || slug == "upstream-timeout"
			if bytes.Contains(a.body, []byte(c.bearer)) {
				c.run.noteOnce("echo", "the node's %d %s problem echoes the caller's bearer token (STYLE rule 14: never echo request bytes or credentials), e.g. for %s",
					a.resp.StatusCode, slug, label)
			}
		default:
			w.forwarded = true // the upstream's own refusal
		}
		if a.resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
}

// ---- Checking what the upstream parsed ----

// settle waits until the upstream's log holds every request a caller was answered for.
func (r *desyncRun) settle() {
	// A barrier straight to the upstream: its record follows every record written before it.
	cl := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	req, _ := http.NewRequest("GET", "http://"+r.upAddr+"/barrier", nil)
	req.Header.Set("X-Req-Id", "BARRIER")
	if resp, err := cl.Do(req); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	cl.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		recs, _ := r.log.snapshot()
		have := map[string]bool{}
		for _, rec := range recs {
			have[rec.ID] = true
			have[desyncPathID(rec.Target)] = true
		}
		r.mu.Lock()
		missing := 0
		for id := range r.answered {
			if !have[id] {
				missing++
			}
		}
		r.mu.Unlock()
		if have["BARRIER"] && missing == 0 {
			return
		}
		<-tick.C
	}
}

// checkUpstream holds the upstream's log against what the callers sent.
func (r *desyncRun) checkUpstream() {
	recs, bad := r.log.snapshot()
	for _, b := range bad {
		r.fail("the upstream printed a line that is not a record (did it crash?): %q", b)
	}
	heads := map[string]int{}
	for _, rec := range recs {
		if rec.Ev != "head" || rec.ID == "BARRIER" {
			continue
		}
		id := rec.ID
		s := r.lookup(id)
		if s == nil {
			if pid := desyncPathID(rec.Target); r.lookup(pid) != nil {
				id, s = pid, r.lookup(pid)
			}
		}
		var probs []string
		origin := ""
		if s == nil {
			probs = append(probs, "no caller sent a request with this id")
		} else {
			origin = fmt.Sprintf("\n    it came from %s's %s: %s", s.write.caller, s.write.label, desyncQuote(s.write.raw))
			heads[id]++
			if heads[id] == 2 {
				probs = append(probs, "it was parsed more than once")
			}
			switch s.zone {
			case desyncBody:
				probs = append(probs, "it is inside a well-framed body: the upstream read the body as a request")
			case desyncForbidden:
				probs = append(probs, "it follows a message whose framing is unrecoverable (RFC 9112 §6.3: the connection must close before it)")
			case desyncReal:
				if rec.Method != s.method || !contains(s.targets, rec.Target) {
					probs = append(probs, fmt.Sprintf("its caller sent %s %s", s.method, strings.Join(s.targets, " or ")))
				}
			}
		}
		if strings.HasPrefix(rec.Target, "/t/") {
			probs = append(probs, "its target keeps the /t/ prefix the node strips: the upstream parsed caller bytes the node never forwarded as a request")
		}
		if rec.Auth != "" {
			probs = append(probs, "it carries an Authorization header, which the node never forwards: the upstream parsed raw caller bytes")
		}
		if strings.Contains(rec.Cookie, r.victimSecret) && (s == nil || s.write.caller != "B" || len(probs) > 0) {
			probs = append(probs, "it carries the victim's cookie")
		}
		if len(probs) > 0 {
			r.fail("the upstream executed %q %q (X-Req-Id %q, Cookie %q): %s%s", rec.Method, rec.Target, rec.ID, rec.Cookie, strings.Join(probs, "; "), origin)
		} else if s != nil && s.zone == desyncUnknown {
			r.note("the node forwarded %q %q (id %s) from bytes after a malformed message in %s's %s", rec.Method, rec.Target, id, s.write.caller, s.write.label)
		}
	}
	for _, rec := range recs {
		if rec.Ev != "done" {
			continue
		}
		if s := r.lookup(rec.ID); s != nil && s.zone == desyncReal && s.bodyLen >= 0 && rec.Method == s.method && contains(s.targets, rec.Target) && rec.BodyLen != s.bodyLen {
			r.fail("the upstream read %d body bytes for %s, its caller sent %d\n    sent %s", rec.BodyLen, rec.ID, s.bodyLen, desyncQuote(s.write.raw))
		}
	}
	r.mu.Lock()
	answered := make(map[string]string, len(r.answered))
	for k, v := range r.answered {
		answered[k] = v
	}
	writes := append([]*desyncWrite(nil), r.writes...)
	r.mu.Unlock()
	for id, caller := range answered {
		if heads[id] == 0 {
			r.fail("%s received a 2xx with X-Upstream-Saw %s (%s), but the upstream never parsed a request with that id", caller, id, r.whose(id))
		}
	}
	for _, w := range writes {
		if !w.reject {
			continue
		}
		reached := w.forwarded
		for _, id := range w.ids {
			if s := r.lookup(id); s != nil && s.zone == desyncReal && heads[id] > 0 {
				reached = true
			}
		}
		if reached {
			r.fail("the node forwarded %s's %s, which it must refuse (answers: %v)\n    sent %s", w.caller, w.label, w.answers, desyncQuote(w.raw))
		}
	}
}

func (r *desyncRun) report(seed int64, mutations int) {
	t := r.t
	r.mu.Lock()
	fails, notes, writes := append([]string(nil), r.fails...), append([]string(nil), r.notes...), append([]*desyncWrite(nil), r.writes...)
	r.mu.Unlock()
	if len(fails) > 0 || testing.Verbose() {
		var b strings.Builder
		for _, w := range writes {
			if !strings.HasPrefix(w.label, "ordinary") {
				fmt.Fprintf(&b, "  %s → %s\n", w.label, strings.Join(w.answers, ", "))
			}
		}
		t.Logf("what the attacker's writes were answered (upstream %s):\n%s", r.upstream, b.String())
		if len(notes) > 0 {
			t.Logf("notes (upstream %s):\n  %s", r.upstream, strings.Join(notes, "\n  "))
		}
	}
	if len(fails) > 0 {
		shown := fails
		if len(shown) > 40 {
			shown = shown[:40]
		}
		t.Errorf("upstream %s: %d desync failures (seed %d; TUNNELPLANE_DESYNC_SEED=%d TUNNELPLANE_DESYNC_ITERATIONS=%d sends the same bytes again); the first %d:\n- %s",
			r.upstream, len(fails), seed, seed, mutations, len(shown), strings.Join(shown, "\n- "))
	}
}

// desyncBudget is the number of mutations and the seed: a short fixed run for `go test`, a long
// random one when TUNNELPLANE_DESYNC_ITERATIONS is set (`make fuzz`).
func desyncBudget(t *testing.T) (int, int64) {
	mutations, seed := desyncDefaultMut, int64(1)
	if v := os.Getenv("TUNNELPLANE_DESYNC_ITERATIONS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			t.Fatalf("TUNNELPLANE_DESYNC_ITERATIONS=%q: want a count of mutations", v)
		}
		mutations, seed = n, time.Now().UnixNano()
	}
	if v := os.Getenv("TUNNELPLANE_DESYNC_SEED"); v != "" {
		s, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("TUNNELPLANE_DESYNC_SEED=%q: want an integer", v)
		}
		seed = s
	}
	return mutations, seed
}

func newDesyncRun(t *testing.T, name string, e *env, upAddr string, log *upstreamLog) *desyncRun {
	return &desyncRun{t: t, upstream: name, addr: e.addr, upAddr: upAddr, log: log, victimSecret: desyncToken(t, 8),
		sent: map[string]*desyncSent{}, answered: map[string]string{}}
}

// Two callers share a tunnel: whatever the attacker sends, the victim's requests reach the
// upstream as sent and only the victim gets their answers, and no upstream ever parses a request
// the attacker hid in a body.
func TestIngressDesyncHarness(t *testing.T) {
	mutations, seed := desyncBudget(t)
	t.Logf("seed %d, %d corpus entries, %d mutations", seed, len(desyncCorpus), mutations)
	for _, up := range desyncUpstreams {
		t.Run(up.name, func(t *testing.T) {
			t.Parallel()
			log := &upstreamLog{}
			upAddr := up.start(t, log)
			e, tokA, tokB := desyncEnv(t, upAddr)
			r := newDesyncRun(t, up.name, e, upAddr, log)
			a := &desyncCaller{run: r, name: "A", bearer: tokA}
			b := &desyncCaller{run: r, name: "B", bearer: tokB, cookie: "session=" + r.victimSecret}
			defer a.reset()
			defer b.reset()
			rng := mrand.New(mrand.NewSource(seed))
			type op struct {
				entry desyncEntry
				base  int // mutation base, when entry is empty
			}
			var ops []op
			for _, c := range desyncCorpus {
				ops = append(ops, op{entry: c})
			}
			for range mutations {
				ops = append(ops, op{base: rng.Intn(len(desyncMutationBases))})
			}
			for i, o := range ops {
				if r.failed() > desyncMaxFails {
					r.note("stopped after %d of %d writes: too many failures", i, len(ops))
					break
				}
				// A pair: the attacker's write and a request of the victim at once, ...
				var wg sync.WaitGroup
				wg.Add(1)
				go func() { defer wg.Done(); b.ordinary(2 * i) }()
				if o.entry.name != "" {
					raw, ids := a.expand(o.entry.tmpl)
					a.send("corpus entry "+strconv.Quote(o.entry.name), raw, ids, o.entry.reject, o.entry.alts)
				} else {
					base := desyncMutationBases[o.base]
					raw, ids := a.expand(base.tmpl)
					raw, how := desyncMutate(rng, raw)
					a.send(fmt.Sprintf("mutation %d of %s (%s)", i-len(desyncCorpus), base.name, how), raw, ids, false, nil)
				}
				wg.Wait()
				// ... then an ordinary request of each, which take the channels the write left pooled.
				wg.Add(1)
				go func() { defer wg.Done(); b.ordinary(2*i + 1) }()
				a.ordinary(i)
				wg.Wait()
			}
			// The channels poisoned last are still pooled: more victims take them.
			for i := range 6 {
				b.ordinary(i)
			}
			r.settle()
			r.checkUpstream()
			r.report(seed, mutations)
		})
	}
}

// ---- Cause B: bytes an upstream sends unasked ----

// hostileUpstream answers every request correctly and, depending on its mode, adds bytes nobody
// asked for after the first answer or interim responses before each.
type hostileUpstream struct {
	mode        string
	ln          net.Listener
	wg          sync.WaitGroup
	mu          sync.Mutex
	conns       map[net.Conn]struct{}
	closed      bool
	answered    atomic.Int64
	strayOut    chan struct{}          // closed once the stray bytes are written
	beforeStray atomic.Pointer[func()] // called just before the late stray is written
}

const desyncStrayID = "STRAY"

func hostileAnswer(status int, id string) string {
	body := `{"id":"` + id + `"}`
	return fmt.Sprintf("HTTP/1.1 %d %s\r\nX-Upstream-Saw: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		status, http.StatusText(status), id, len(body), body)
}

var desyncStray = hostileAnswer(200, desyncStrayID)

func startHostile(t *testing.T, mode string) *hostileUpstream {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hostileUpstream{mode: mode, ln: ln, conns: map[net.Conn]struct{}{}, strayOut: make(chan struct{})}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			if h.closed {
				h.mu.Unlock()
				c.Close()
				return
			}
			h.conns[c] = struct{}{}
			h.wg.Add(1)
			h.mu.Unlock()
			go h.serve(c)
		}
	}()
	t.Cleanup(func() {
		h.mu.Lock()
		h.closed = true
		ln.Close()
		for c := range h.conns {
			c.Close()
		}
		h.mu.Unlock()
		h.wg.Wait()
	})
	return h
}

func (h *hostileUpstream) serve(c net.Conn) {
	defer h.wg.Done()
	defer c.Close()
	var wmu sync.Mutex
	write := func(s string) {
		wmu.Lock()
		_, _ = c.Write([]byte(s))
		wmu.Unlock()
	}
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		first := h.answered.Add(1) == 1
		id := req.Header.Get("X-Req-Id")
		ans := hostileAnswer(http.StatusOK, id)
		switch {
		case h.mode == "late" && first:
			write(ans)
			h.wg.Add(1)
			// The point of this upstream is its timing: the stray comes while the channel idles.
			time.AfterFunc(75*time.Millisecond, func() {
				defer h.wg.Done()
				if f := h.beforeStray.Load(); f != nil {
					(*f)()
				}
				write(desyncStray)
				close(h.strayOut)
			})
		case h.mode == "appended" && first:
			write(ans + desyncStray)
			close(h.strayOut)
		case h.mode == "chunked-appended" && first:
			body := `{"id":"` + id + `"}`
			write(fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Upstream-Saw: %s\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", id, len(body), body) + desyncStray)
			close(h.strayOut)
		case h.mode == "head-body" && first:
			// An answer to HEAD with the body it must not have, which is itself a response.
			write(fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Upstream-Saw: %s\r\nContent-Length: %d\r\n\r\n%s", id, len(desyncStray), desyncStray))
			close(h.strayOut)
		case h.mode == "204-body" && first:
			write(fmt.Sprintf("HTTP/1.1 204 No Content\r\nX-Upstream-Saw: %s\r\n\r\n%s", id, desyncStray))
			close(h.strayOut)
		case h.mode == "early-hints":
			write("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" + ans)
		case h.mode == "continue":
			write("HTTP/1.1 100 Continue\r\n\r\n" + ans)
		default:
			write(ans)
		}
	}
}

// tunnelBytesIn is what the node has read from the agent of tunnel "llm" so far.
func tunnelBytesIn(e *env) int64 {
	if n := e.nodeNow(); n != nil {
		for _, s := range n.Sessions() {
			if s.TunnelID == "tun-llm" && s.HoldsTunnel {
				return s.BytesIn
			}
		}
	}
	return 0
}

// An upstream that sends bytes nobody asked for must not shift the answers of later callers:
// each gets the answer to its own request, never the stray.
func TestIngressDropsUnsolicitedUpstreamBytes(t *testing.T) {
	for _, v := range []struct {
		name, mode, first string // first: the method of the first request
		firstStatus       int
		stray             bool
	}{
		{"a stray response sent late while the channel is pooled", "late", "GET", 200, true},
		{"a stray response in the same write as an answer", "appended", "GET", 200, true},
		{"a stray response after a chunked answer", "chunked-appended", "GET", 200, true},
		{"a body after an answer to HEAD", "head-body", "HEAD", 200, true},
		{"a body after a 204", "204-body", "GET", 204, true},
		{"103 Early Hints before every answer", "early-hints", "GET", 200, false},
		{"an unsolicited 100 Continue before every answer", "continue", "GET", 200, false},
	} {
		t.Run(v.mode, func(t *testing.T) {
			t.Parallel()
			h := startHostile(t, v.mode)
			e, tokA, tokB := desyncEnv(t, h.ln.Addr().String())
			r := newDesyncRun(t, "hostile "+v.mode, e, "", nil)
			a := &desyncCaller{run: r, name: "A", bearer: tokA}
			b := &desyncCaller{run: r, name: "B", bearer: tokB}
			defer a.reset()
			defer b.reset()
			var b0 atomic.Int64
			snap := func() { b0.Store(tunnelBytesIn(e)) }
			h.beforeStray.Store(&snap)
			exchange := func(c *desyncCaller, method string, want int) {
				t.Helper()
				id := c.newID()
				raw := fmt.Sprintf("%s %s/%s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nX-Req-Id: %s\r\n\r\n", method, desyncPrefix, id, desyncHost, c.bearer, id)
				a, err := c.roundTrip([]byte(raw), method)
				if err != nil {
					t.Errorf("%s (%s): %s's %s %s got no answer: %v", v.name, v.mode, c.name, method, id, err)
					return
				}
				if saw := a.saw(); a.resp.StatusCode != want || saw != id {
					what := ""
					if saw == desyncStrayID {
						what = " — the stray response the upstream sent unasked after the first answer"
					}
					t.Errorf("%s (%s): %s's %s %s: want the upstream's %d for %s; got %s, X-Upstream-Saw %q%s",
						v.name, v.mode, c.name, method, id, want, id, a.resp.Status, saw, what)
				}
			}
			exchange(a, v.first, v.firstStatus)
			if v.stray {
				select {
				case <-h.strayOut:
				case <-time.After(10 * time.Second):
					t.Fatal("the upstream never sent its stray bytes")
				}
				if v.mode == "late" {
					// Only bytes that arrived before a request was written can be told apart from
					// its answer: wait until the node has read them from the agent.
					poll.Until(t, 10*time.Second, "the stray response reached the node", func() bool {
						return tunnelBytesIn(e) >= b0.Load()+int64(len(desyncStray))
					})
				}
			}
			for i := range 6 {
				c := b
				if i%2 == 1 {
					c = a
				}
				exchange(c, "GET", 200)
			}
		})
	}
}

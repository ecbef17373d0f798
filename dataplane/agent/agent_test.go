package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/dataplane/node"
)

func TestMain(m *testing.M) {
	// The tests against a real node (node_test.go) run its fasthttp ingress: its worker-pool
	// cleaner notices a stopped server within its 10s idle period, and its clock goroutine serves
	// the whole process. net/http lingers 500ms after refusing a request whose body it did not
	// read; that goroutine ends by itself.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("net/http.(*conn).closeWriteAndWait"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"))
}

func TestNodeURLAndUpstreamParsing(t *testing.T) {
	for in, want := range map[string]string{
		"https://node.example.com":      "wss://node.example.com/v1/agent",
		"http://127.0.0.1:8080/":        "ws://127.0.0.1:8080/v1/agent",
		"wss://node.example.com/custom": "wss://node.example.com/custom",
	} {
		u, err := nodeURL(in)
		if err != nil || u.String() != want {
			t.Errorf("nodeURL(%q) = %v, %v; want %s", in, u, err, want)
		}
	}
	for _, bad := range []string{"ftp://x", "ws://", "::"} {
		if _, err := nodeURL(bad); err == nil {
			t.Errorf("nodeURL(%q) accepted", bad)
		}
	}
	for in, want := range map[string]upstream{
		"http://127.0.0.1:11434": {"http", "127.0.0.1:11434", "127.0.0.1:11434"},
		"http://localhost":       {"http", "localhost:80", "localhost"},
		"https://svc.internal":   {"https", "svc.internal:443", "svc.internal"},
		"tcp://127.0.0.1:22":     {"tcp", "127.0.0.1:22", ""},
	} {
		got, err := parseUpstream(in)
		if err != nil || got != want {
			t.Errorf("parseUpstream(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	if _, err := parseUpstream("tcp://host"); err == nil {
		t.Error("a tcp upstream without a port was accepted")
	}
}

func TestBackoffGrowsWithJitterAndCaps(t *testing.T) {
	a := &agent{cfg: Config{MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}}
	for n, base := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		base *= time.Millisecond
		if base > time.Second {
			base = time.Second
		}
		for range 50 {
			d := a.backoff(n)
			if d < base/2 || d > base {
				t.Fatalf("attempt %d: %v outside [%v, %v]", n, d, base/2, base)
			}
		}
	}
}

func TestVersionIsSanitizedForTheSSHBanner(t *testing.T) {
	if got := sanitizeVersion("v1.2.3-rc1 (dirty)"); got != "v1.2.3_rc1_(dirty)" {
		t.Fatalf("%q", got)
	}
}

func TestRefusalExplainsProblemDocuments(t *testing.T) {
	resp := &http.Response{StatusCode: 400, Body: io.NopCloser(strings.NewReader(
		`{"title":"Unsupported agent protocol version","detail":"this node supports tunnelplane.v2, tunnelplane.v1"}`))}
	err := refusal(resp)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "HTTP 400") || !strings.Contains(err.Error(), "supports tunnelplane.v2") {
		t.Fatalf("%v", err)
	}
	// A 4xx cannot change by asking again; 5xx, 408 and 429 may.
	for code, permanent := range map[int]bool{400: true, 404: true, 403: true, 408: false, 429: false, 502: false, 503: false} {
		err := refusal(&http.Response{StatusCode: code, Body: io.NopCloser(strings.NewReader(""))})
		if errors.Is(err, ErrPermanent) != permanent || !errors.Is(err, ErrRefused) || errors.Is(err, ErrUnavailable) != (code == 503) {
			t.Errorf("HTTP %d: %v (permanent: %v)", code, err, errors.Is(err, ErrPermanent))
		}
	}
}

// copyBuf moves everything, switching to the large buffer once a read fills the small one.
func TestCopyBufCopiesEverything(t *testing.T) {
	src := bytes.Repeat([]byte("0123456789abcdef"), 100000)
	var dst bytes.Buffer
	if err := copyBuf(&dst, bytes.NewReader(src)); err != nil || !bytes.Equal(dst.Bytes(), src) {
		t.Fatalf("copied %d of %d: %v", dst.Len(), len(src), err)
	}
}

// The node's answer to agent-info comes from the network: fuzzed, seeded with what nodes send.
func FuzzInfoReplyUpstream(f *testing.F) {
	reply := func(js string) []byte { return ssh.Marshal(node.JSONPayload{JSON: js}) }
	for _, seed := range [][]byte{
		reply(`{"upstream":"http://127.0.0.1:11434"}`), reply(`{}`), reply(`not json`), nil, // older nodes: nothing
		reply(`{"upstream":"http://127.0.0.1:11434"}`)[:7], // cut short
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		up := infoReply(payload).Upstream
		if up == "" {
			return
		}
		// Only a whole SSH string holding a JSON document may give an upstream.
		var p node.JSONPayload
		if ssh.Unmarshal(payload, &p) != nil || !json.Valid([]byte(p.JSON)) {
			t.Fatalf("upstream %q from %q", up, payload)
		}
	})
}

func TestInfoReplyUpstream(t *testing.T) {
	if got := infoReply(ssh.Marshal(node.JSONPayload{JSON: `{"upstream":"http://h:1","node_id":"n-1"}`})); got.Upstream != "http://h:1" || got.NodeID != "n-1" {
		t.Fatalf("%+v", got)
	}
	if got := infoReply(ssh.Marshal(node.JSONPayload{JSON: `{"node_id":"n 1\u001b[2J"}`})); got.NodeID != "" {
		t.Fatalf("a node id with control characters was kept: %q", got.NodeID)
	}
	if got := infoReply(nil).Upstream; got != "" {
		t.Fatalf("an older node's empty answer gave %q", got)
	}
}

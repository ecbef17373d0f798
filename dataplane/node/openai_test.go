package node_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/dataplane/view"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

// openAIUpstream is an OpenAI-compatible server that wants its own API key (as vLLM --api-key,
// llama.cpp or LiteLLM do) and streams chat completion chunks spaced by gap.
func openAIUpstream(t *testing.T, apiKey string, chunks int, gap time.Duration) string {
	return newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("Authorization") != "Bearer "+apiKey {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":{"message":"Incorrect API key provided to the upstream","type":"invalid_request_error","code":"invalid_api_key"}}`)
			return
		}
		if r.Header.Get("X-Tunnel-Key") != "" || r.URL.Path != "/v1/chat/completions" {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":{"message":"the tunnel key or a wrong path reached the upstream","type":"invalid_request_error"}}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		f := w.(http.Flusher)
		for i := range chunks {
			fmt.Fprintf(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"demo\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok%d \"},\"finish_reason\":null}]}\n\n", i)
			f.Flush()
			time.Sleep(gap)
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
	}))
}

// runOpenAIClient runs testdata/openai/client.mjs and returns its JSON lines.
func runOpenAIClient(t *testing.T, dir, baseURL, tunnelKey, upstreamKey string) []map[string]any {
	t.Helper()
	cmd := exec.Command("node", "client.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "OPENAI_BASE_URL="+baseURL, "TUNNEL_KEY="+tunnelKey, "UPSTREAM_KEY="+upstreamKey)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node client.mjs: %v\n%s", err, out)
	}
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("client output %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	return lines
}

// TestOpenAISDKThroughAnAccessKey: the official OpenAI SDK for Node streams a chat completion
// through a tunnel whose upstream requires its own API key: the tunnel's access key rides in
// X-Tunnel-Key, the SDK's key reaches the upstream, the chunks arrive spaced as sent (streamed,
// not buffered). With a wrong upstream key the SDK shows the upstream's own refusal; once the
// access key is revoked it shows the node's reason (the error member of its problem document).
// Skips when Node.js or the SDK (make deps: npm install in testdata/openai) is missing.
func TestOpenAISDKThroughAnAccessKey(t *testing.T) {
	t.Parallel()
	dir, _ := filepath.Abs(filepath.Join("testdata", "openai"))
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openai", "package.json")); err != nil {
		t.Skip("the OpenAI SDK is not installed in testdata/openai (make deps runs npm install there)")
	}
	kv := newKeyView(t)
	e := newEnv(t, withNodeConfig(func(c *node.Config) { c.Router, c.Authorizer = kv.v, kv.v }))
	b, _ := json.Marshal(ledger.NewKeyAdded("o", ledger.PurposeToken, "control-plane", e.key))
	if err := kv.v.Apply(view.Event{Position: kv.pos, EventID: "ev-key", StreamID: ledger.LogStream, Type: ledger.TypeKeyAdded, Payload: b}); err != nil {
		t.Fatal(err)
	}
	kv.pos++
	const upstreamKey, chunks, gap = "sk-upstream-secret", 6, 100 * time.Millisecond
	up := openAIUpstream(t, upstreamKey, chunks, gap)
	e.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = up })
	e.waitHeld("tun-llm")
	key := kv.issue("sdk", "tun-llm")
	base := e.ingressURL() + "/t/llm.one/v1"

	lines := runOpenAIClient(t, dir, base, key, upstreamKey)
	var text strings.Builder
	var at []float64
	for _, l := range lines {
		if l["error"] != nil {
			t.Fatalf("the SDK failed: %v", l["error"])
		}
		text.WriteString(l["content"].(string))
		at = append(at, l["at_ms"].(float64))
	}
	want := ""
	for i := range chunks {
		want += fmt.Sprintf("tok%d ", i)
	}
	if text.String() != want {
		t.Fatalf("streamed %q, want %q", text.String(), want)
	}
	// Sent 100 ms apart: a buffer on the way would deliver them together (a spread near 0); a
	// busy machine may delay single chunks, so half the sending time is what is asked.
	if spread := at[len(at)-1] - at[0]; spread < float64((chunks-1)*int(gap/time.Millisecond)/2) {
		t.Fatalf("the chunks arrived within %.0f ms, sent over %d ms", spread, (chunks-1)*int(gap/time.Millisecond))
	}

	errorOf := func(lines []map[string]any) map[string]any {
		t.Helper()
		if len(lines) != 1 || lines[0]["error"] == nil {
			t.Fatalf("want one error line, got %v", lines)
		}
		return lines[0]["error"].(map[string]any)
	}
	if e := errorOf(runOpenAIClient(t, dir, base, key, "sk-wrong")); e["status"] != float64(401) || e["code"] != "invalid_api_key" ||
		!strings.Contains(e["message"].(string), "Incorrect API key provided to the upstream") {
		t.Fatalf("a wrong upstream key: the SDK says %v", e)
	}
	kv.apply(domain.AccessKeyRevoked{KeyID: "key-sdk", OrgID: "org-1", TunnelID: "tun-llm", Reason: "leaked"})
	if e := errorOf(runOpenAIClient(t, dir, base, key, upstreamKey)); e["status"] != float64(401) || e["code"] != "unauthenticated" ||
		e["type"] != "authentication_error" || !strings.Contains(e["message"].(string), "revoked") {
		t.Fatalf("a revoked access key: the SDK says %v", e)
	}
}

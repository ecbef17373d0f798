package demo

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestGenerateStreamsSpacedTokens(t *testing.T) {
	srv := httptest.NewServer(Handler(Config{TokenDelay: 30 * time.Millisecond}))
	defer srv.Close()
	defer srv.Client().CloseIdleConnections()
	resp, err := http.Post(srv.URL+"/api/generate", "application/json",
		strings.NewReader(`{"prompt":"one two three","options":{"num_predict":4}}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Fatalf("content type %q", ct)
	}
	br := bufio.NewReader(resp.Body)
	var words []string
	var arrivals []time.Time
	for {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		arrivals = append(arrivals, time.Now())
		var c GenerateChunk
		if err := json.Unmarshal(line, &c); err != nil {
			t.Fatal(err)
		}
		if c.Done {
			if c.EvalCount != 4 {
				t.Fatalf("eval count %d", c.EvalCount)
			}
			continue
		}
		words = append(words, c.Response)
	}
	if got := strings.Join(words, ""); got != "one two three one " {
		t.Fatalf("tokens %q", got)
	}
	if gap := arrivals[3].Sub(arrivals[0]); gap < 80*time.Millisecond {
		t.Fatalf("tokens arrived together (%v for three gaps of 30ms)", gap)
	}
}

func TestEchoAndWebSocket(t *testing.T) {
	srv := httptest.NewServer(Handler(Config{}))
	defer srv.Close()
	defer srv.Client().CloseIdleConnections()
	req, _ := http.NewRequest("PUT", srv.URL+"/echo/x?y=1", strings.NewReader("payload"))
	req.Header.Set("X-Test", "v")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "payload" || resp.Header.Get("X-Echo-Method") != "PUT" || resp.Header.Get("X-Echo-URI") != "/echo/x?y=1" ||
		!strings.Contains(resp.Header.Get("X-Echo-Headers"), `"X-Test":["v"]`) {
		t.Fatalf("echo: %q %v", body, resp.Header)
	}
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.WriteMessage(websocket.TextMessage, []byte("ping"))
	if _, p, err := c.ReadMessage(); err != nil || string(p) != "ping" {
		t.Fatalf("ws echo %q %v", p, err)
	}
}

func TestValidateRejectsNegatives(t *testing.T) {
	err := Config{TokenDelay: -1, MaxTokens: -1}.Validate()
	if err == nil || !strings.Contains(err.Error(), "TokenDelay") || !strings.Contains(err.Error(), "MaxTokens") {
		t.Fatalf("validate: %v", err)
	}
}

// With Answer the model answers in sentences chosen by the prompt, not with the prompt's words.
func TestAnswerReadsLikeAModel(t *testing.T) {
	srv := httptest.NewServer(Handler(Config{Answer: true, TokenDelay: time.Millisecond}))
	defer srv.Close()
	defer srv.Client().CloseIdleConnections()
	ask := func(prompt string) string {
		resp, err := srv.Client().Post(srv.URL+"/api/generate", "application/json", strings.NewReader(`{"prompt":"`+prompt+`","stream":false}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var c GenerateChunk
		if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(c.Response)
	}
	a := ask("why is the sky blue")
	if a != CannedAnswer("why is the sky blue") || strings.Contains(a, "why is the sky blue") || len(strings.Fields(a)) < 10 {
		t.Fatalf("answer %q", a)
	}
	if ask("why is the sky blue") != a {
		t.Fatal("the same prompt got another answer")
	}
	seen := map[string]bool{}
	for i := range 40 {
		seen[CannedAnswer(strings.Repeat("x", i))] = true
	}
	if len(seen) < 4 {
		t.Fatalf("40 prompts got only %d different answers", len(seen))
	}
}

// /events and /ws/ticks keep sending, spaced by ?every, until the caller leaves; a bad interval
// is refused.
func TestTicksKeepComing(t *testing.T) {
	srv := httptest.NewServer(Handler(Config{}))
	defer srv.Close()
	defer srv.Client().CloseIdleConnections()
	// Timed from before the request: the first tick goes with the headers, the fifth four
	// intervals after the server's ticker started, so never before 40ms from here.
	start := time.Now()
	resp, err := srv.Client().Get(srv.URL + "/events?every=10ms")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	for n := 0; n < 5; {
		if !sc.Scan() {
			t.Fatalf("the event stream ended after %d events: %v", n, sc.Err())
		}
		if strings.HasPrefix(sc.Text(), "data: tick ") {
			n++
		}
	}
	resp.Body.Close()
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Fatalf("five ticks 10ms apart came in %v", d)
	}
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws/ticks?every=5ms", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, p, err := c.ReadMessage(); err != nil || string(p) != "tick "+strconv.Itoa(i) {
			t.Fatalf("tick %d: %q %v", i, p, err)
		}
	}
	c.Close()
	if resp, err := srv.Client().Get(srv.URL + "/events?every=1h"); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("every=1h: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

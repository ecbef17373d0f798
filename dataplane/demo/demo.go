package demo

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// ErrInvalidConfig is returned by Config.Validate.
var ErrInvalidConfig = errors.New("demo: invalid config")

// Config configures the demo upstream.
type Config struct {
	// TokenDelay spaces the streamed tokens (default 20ms; a real model on a laptop is slower).
	TokenDelay time.Duration
	// MaxTokens caps one response (default 256).
	MaxTokens int
	// Model is the name the responses carry (default "demo").
	Model string
	// Answer makes /api/generate answer like a model: one of a few canned answers, chosen by the
	// prompt's hash, instead of the prompt's words repeated (which tests check arrived intact).
	Answer bool
	Logger *slog.Logger
}

func (c *Config) applyDefaults() {
	if c.TokenDelay == 0 {
		c.TokenDelay = 20 * time.Millisecond
	}
	if c.MaxTokens == 0 {
		c.MaxTokens = 256
	}
	if c.Model == "" {
		c.Model = "demo"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every bad field at once.
func (c Config) Validate() error {
	var errs []error
	if c.TokenDelay < 0 {
		errs = append(errs, fmt.Errorf("%w: TokenDelay %v is negative", ErrInvalidConfig, c.TokenDelay))
	}
	if c.MaxTokens < 0 {
		errs = append(errs, fmt.Errorf("%w: MaxTokens %d is negative", ErrInvalidConfig, c.MaxTokens))
	}
	return errors.Join(errs...)
}

// GenerateRequest is the body of POST /api/generate (the fields of Ollama's API it honours).
type GenerateRequest struct {
	Model   string `json:"model"`
	Prompt  string `json:"prompt"`
	Stream  *bool  `json:"stream,omitempty"`
	Options struct {
		NumPredict int `json:"num_predict,omitempty"`
	} `json:"options"`
}

// GenerateChunk is one NDJSON line of the response.
type GenerateChunk struct {
	Model      string `json:"model"`
	CreatedAt  string `json:"created_at"`
	Response   string `json:"response"`
	Done       bool   `json:"done"`
	DoneReason string `json:"done_reason,omitempty"`
	EvalCount  int    `json:"eval_count,omitempty"`
}

// Handler serves:
//
//	POST /api/generate   NDJSON token stream (the prompt's words, repeated up to options.num_predict;
//	                     with Config.Answer a canned answer)
//	GET  /api/tags       the one model
//	GET  /healthz        "ok"
//	*    /echo           the request body streamed back; X-Echo-Method, X-Echo-URI, X-Echo-Host and
//	                     X-Echo-Headers (JSON) describe the request as it arrived
//	GET  /bytes?n=N      N bytes of a fixed pattern (Content-Length set)
//	GET  /ws             WebSocket echo
//	GET  /events         server-sent events, "tick <n>", every TokenDelay (?every=<duration>) until the caller leaves
//	GET  /ws/ticks       WebSocket sending "tick <n>" every TokenDelay (?every=<duration>) until the caller leaves
//
// Handler panics on a config Validate rejects; New returns the error instead.
func Handler(cfg Config) http.Handler {
	h, err := New(cfg)
	if err != nil {
		panic(err)
	}
	return h
}

// New is Handler returning a bad config as an error.
func New(cfg Config) (http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.applyDefaults()
	s := &server{cfg: cfg}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/generate", s.generate)
	mux.HandleFunc("GET /api/tags", s.tags)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/echo", s.echo)
	mux.HandleFunc("/echo/", s.echo)
	mux.HandleFunc("GET /bytes", s.bytes)
	mux.HandleFunc("GET /ws", s.ws)
	mux.HandleFunc("GET /events", s.events)
	mux.HandleFunc("GET /ws/ticks", s.wsTicks)
	return mux, nil
}

type server struct{ cfg Config }

func (s *server) generate(w http.ResponseWriter, r *http.Request) {
	var req GenerateRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		http.Error(w, "bad request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	words := strings.Fields(req.Prompt)
	if s.cfg.Answer {
		words = strings.Fields(CannedAnswer(req.Prompt))
	}
	if len(words) == 0 {
		words = []string{"hello"}
	}
	n := req.Options.NumPredict
	if n <= 0 {
		n = len(words)
	}
	n = min(n, s.cfg.MaxTokens)
	model := s.cfg.Model
	if req.Model != "" {
		model = req.Model
	}
	if req.Stream != nil && !*req.Stream {
		var b strings.Builder
		for i := range n {
			b.WriteString(words[i%len(words)] + " ")
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(GenerateChunk{Model: model, CreatedAt: now(), Response: b.String(), Done: true, DoneReason: "stop", EvalCount: n})
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	t := time.NewTimer(0)
	defer t.Stop()
	for i := range n {
		if i > 0 {
			t.Reset(s.cfg.TokenDelay)
			select {
			case <-r.Context().Done():
				return
			case <-t.C:
			}
		}
		if err := enc.Encode(GenerateChunk{Model: model, CreatedAt: now(), Response: words[i%len(words)] + " "}); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
	enc.Encode(GenerateChunk{Model: model, CreatedAt: now(), Done: true, DoneReason: "stop", EvalCount: n})
}

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

func (s *server) tags(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"models":[{"name":%q,"model":%q}]}`+"\n", s.cfg.Model, s.cfg.Model)
}

func (s *server) echo(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Echo-Method", r.Method)
	h.Set("X-Echo-URI", r.RequestURI)
	h.Set("X-Echo-Host", r.Host)
	hdr, _ := json.Marshal(r.Header)
	h.Set("X-Echo-Headers", string(hdr))
	if ct := r.Header.Get("Content-Type"); ct != "" {
		h.Set("Content-Type", ct)
	} else {
		h.Set("Content-Type", "application/octet-stream")
	}
	if r.ContentLength >= 0 {
		h.Set("Content-Length", strconv.FormatInt(r.ContentLength, 10))
	}
	rc := http.NewResponseController(w)
	// Echo as the body arrives: reading the request while writing the response needs full duplex.
	_ = rc.EnableFullDuplex()
	w.WriteHeader(http.StatusOK)
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if r.ContentLength < 0 || r.ContentLength < 1<<20 {
				rc.Flush() // small or chunked bodies: show each piece at once
			}
		}
		if err != nil {
			return
		}
	}
}

// Pattern fills p with the byte pattern /bytes serves, as if p started at offset off.
func Pattern(p []byte, off int64) {
	for i := range p {
		x := off + int64(i)
		p[i] = byte(x ^ x>>8 ^ x>>16)
	}
}

func (s *server) bytes(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
	if err != nil || n < 0 {
		http.Error(w, "want ?n=<bytes>", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	buf := make([]byte, 32<<10)
	var off int64
	for off < n {
		m := int(min(int64(len(buf)), n-off))
		Pattern(buf[:m], off)
		if _, err := w.Write(buf[:m]); err != nil {
			return
		}
		off += int64(m)
	}
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (s *server) ws(w http.ResponseWriter, r *http.Request) {
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	for {
		typ, p, err := c.ReadMessage()
		if err != nil {
			return
		}
		if err := c.WriteMessage(typ, p); err != nil {
			return
		}
	}
}

// every is the interval of /events and /ws/ticks: ?every=<duration> (1ms to 1m), else TokenDelay.
func (s *server) every(r *http.Request) (time.Duration, bool) {
	v := r.URL.Query().Get("every")
	if v == "" {
		return s.cfg.TokenDelay, true
	}
	d, err := time.ParseDuration(v)
	return d, err == nil && d >= time.Millisecond && d <= time.Minute
}

// events streams server-sent events until the caller leaves (a live feed, as a dashboard holds).
func (s *server) events(w http.ResponseWriter, r *http.Request) {
	every, ok := s.every(r)
	if !ok {
		http.Error(w, "every must be a duration from 1ms to 1m", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	rc := http.NewResponseController(w)
	t := time.NewTicker(every)
	defer t.Stop()
	for n := 0; ; n++ {
		if _, err := fmt.Fprintf(w, "id: %d\ndata: tick %d\n\n", n, n); err != nil || rc.Flush() != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
	}
}

// wsTicks sends a text message every interval until the caller leaves (or closes).
func (s *server) wsTicks(w http.ResponseWriter, r *http.Request) {
	every, ok := s.every(r)
	if !ok {
		http.Error(w, "every must be a duration from 1ms to 1m", http.StatusBadRequest)
		return
	}
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	t := time.NewTicker(every)
	defer t.Stop()
	for n := 0; ; n++ {
		if err := c.WriteMessage(websocket.TextMessage, []byte("tick "+strconv.Itoa(n))); err != nil {
			break
		}
		select {
		case <-gone:
			return
		case <-t.C:
		}
	}
	_ = c.Close()
	<-gone
}

// Package hectest is a receiver that answers as Splunk's HTTP Event Collector documents
// (/services/collector/event): 401 "Token is required" (code 2), 403 "Invalid token" (4), 400
// "Invalid data format" (6), 503 "Server is busy" (9), 200 "Success" (0). The SIEM tests deliver
// to it over TLS; it records each event's sequence number and event id, can be busy, refuse
// chosen events, and stop and start again on the same port.
package hectest

import (
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// Path is the event endpoint.
const Path = "/services/collector/event"

// Server is one collector.
type Server struct {
	token string
	addr  string

	mu        sync.Mutex
	srv       *httptest.Server
	busy      int             // answer this many posts with 503 first
	busyEvery int             // and then every n-th post
	bad       map[string]bool // event ids whose batches it refuses as "Invalid data format"
	seqs      map[string][]string
	posts     int
}

// New starts a collector that accepts token, and stops it at the end of the test.
func New(t testing.TB, token string) *Server {
	t.Helper()
	h := &Server{token: token, seqs: map[string][]string{}, bad: map[string]bool{}}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Stop)
	return h
}

// Start serves, on a free port the first time and on the same port after that.
func (h *Server) Start() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.srv != nil {
		return nil
	}
	addr := h.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("hectest: listen: %w", err)
	}
	h.addr = ln.Addr().String()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(h.serve))
	srv.Listener.Close()
	srv.Listener = ln
	srv.StartTLS()
	h.srv = srv
	return nil
}

// Stop closes the listener and every connection, as a collector that went away.
func (h *Server) Stop() {
	h.mu.Lock()
	srv := h.srv
	h.srv = nil
	h.mu.Unlock()
	if srv != nil {
		srv.CloseClientConnections()
		srv.Close()
	}
}

// URL is the event endpoint's URL.
func (h *Server) URL() string { return "https://" + h.addr + Path }

// CACertPEM is the certificate the collector presents (its own CA), for 127.0.0.1.
func (h *Server) CACertPEM() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.srv.Certificate().Raw}))
}

// TLSConfig trusts the collector.
func (h *Server) TLSConfig() *tls.Config {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
}

// Busy answers the next n posts with 503, then every every-th post (0: never).
func (h *Server) Busy(n, every int) {
	h.mu.Lock()
	h.busy, h.busyEvery = n, every
	h.mu.Unlock()
}

// Refuse answers batches holding the event with 400 "Invalid data format".
func (h *Server) Refuse(eventID string) {
	h.mu.Lock()
	h.bad[eventID] = true
	h.mu.Unlock()
}

// Received is what the collector accepted: sequence number → the event ids it came with.
func (h *Server) Received() map[string][]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string][]string, len(h.seqs))
	for k, v := range h.seqs {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// Posts is how many authorized posts arrived.
func (h *Server) Posts() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.posts
}

func answer(w http.ResponseWriter, status int, text string, code int) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"text":%q,"code":%d}`, text, code)
}

func (h *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != Path || r.Method != http.MethodPost {
		answer(w, http.StatusNotFound, "The requested URL was not found on this server.", 404)
		return
	}
	switch auth := r.Header.Get("Authorization"); {
	case auth == "":
		answer(w, http.StatusUnauthorized, "Token is required", 2)
		return
	case auth != "Splunk "+h.token:
		answer(w, http.StatusForbidden, "Invalid token", 4)
		return
	}
	h.mu.Lock()
	h.posts++
	busy := h.busy > 0 || (h.busyEvery > 0 && h.posts%h.busyEvery == 0)
	if h.busy > 0 {
		h.busy--
	}
	h.mu.Unlock()
	if busy {
		answer(w, http.StatusServiceUnavailable, "Server is busy", 9)
		return
	}
	dec := json.NewDecoder(r.Body)
	var got [][2]string
	for {
		var ev struct {
			Time   float64           `json:"time"`
			Event  json.RawMessage   `json:"event"`
			Fields map[string]string `json:"fields"`
		}
		err := dec.Decode(&ev)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil || len(ev.Event) == 0 || ev.Event[0] != '{' || ev.Time <= 0 || ev.Fields["seq"] == "" || ev.Fields["event_id"] == "" {
			answer(w, http.StatusBadRequest, "Invalid data format", 6)
			return
		}
		got = append(got, [2]string{ev.Fields["seq"], ev.Fields["event_id"]})
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, g := range got {
		if h.bad[g[1]] {
			answer(w, http.StatusBadRequest, "Invalid data format", 6)
			return
		}
	}
	for _, g := range got {
		h.seqs[g[0]] = append(h.seqs[g[0]], g[1])
	}
	answer(w, http.StatusOK, "Success", 0)
}

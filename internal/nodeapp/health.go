package nodeapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tunnelplane/tunnelplane/bus/nodebus"
	"github.com/tunnelplane/tunnelplane/domain"
)

// The node's health listener is its own, apart from the agents' and callers' one: that one routes
// by Host and by path, and every path there may be a tunnel's (/t/<tunnel>.<org>/healthz, or
// /healthz on <tunnel>.<org>.<base domain>), so a probe path on it would shadow a tunnel's or be
// shadowed by one.

// DefaultDrainTimeout bounds a drain: calls in flight that have not finished by then are cut.
const DefaultDrainTimeout = 30 * time.Second

// ErrDrainRefused is returned by RequestDrain when the node did not drain.
var ErrDrainRefused = errors.New("node: drain refused")

// Readiness is the body of the node's /readyz.
type Readiness struct {
	Ready    bool     `json:"ready"`
	View     string   `json:"view"`
	NATS     string   `json:"nats"`
	Draining bool     `json:"draining"`
	Problems []string `json:"problems,omitempty"`
}

// DrainResult is the body of a drain's answer.
type DrainResult struct {
	AgentsDisconnected int  `json:"agents_disconnected"`
	Complete           bool `json:"complete"` // false: DrainTimeout cut calls still in flight
}

// HealthHandler serves /healthz, /readyz and /drain (see healthHandler).
func (a *App) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		r := a.Readiness()
		status := http.StatusOK
		if !r.Ready {
			status = http.StatusServiceUnavailable
			w.Header().Set("Retry-After", "1")
		}
		writeJSON(w, status, r)
	})
	mux.HandleFunc("POST /drain", a.serveDrain)
	return mux
}

// Readiness says whether the node should get agents and callers now: it has started, its view
// holds the log as far as the control plane said it must (at start, and within MaxViewLag
// since), NATS is connected (its view's feed and its facts' way out), and it is not draining or
// stopping.
func (a *App) Readiness() Readiness {
	r := Readiness{Ready: true, View: "starting", NATS: "unknown"}
	fail := func(problem string) { r.Ready, r.Problems = false, append(r.Problems, problem) }
	if a.stopping.Load() {
		fail("the node is stopping")
	}
	if !a.serving.Load() {
		fail("the node is starting")
		return r
	}
	if err := a.View.Ready(); err != nil {
		r.View = "behind"
		fail("view: " + err.Error())
	} else {
		r.View = "ok"
	}
	if st := a.nc.Status(); st != nats.CONNECTED {
		r.NATS = "disconnected"
		fail("nats: " + st.String())
	} else {
		r.NATS = "connected"
	}
	if a.Node.Draining() {
		r.Draining = true
		fail("the node is draining")
	}
	return r
}

// serveDrain drains the node on a request from this host only (a Kubernetes preStop hook runs
// `tunnelplane node drain` in the pod): whoever reaches the health port from elsewhere, the
// kubelet's probes included, cannot take the node out of service. The answer comes when the
// drain has ended, bounded by DrainTimeout.
func (a *App) serveDrain(w http.ResponseWriter, r *http.Request) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "drain is accepted from this host only"})
		return
	}
	res, err := a.Drain(r.Context())
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// Drain takes the node out of service: readiness fails at once, agents are told to go (they
// connect elsewhere), no new calls are routed, calls in flight may finish until DrainTimeout,
// then the sessions are closed and node.drained is reported. It is done once: a second call (the
// SIGTERM after a preStop hook) waits for the first one's result. ctx bounds only the wait.
func (a *App) Drain(ctx context.Context) (DrainResult, error) {
	if !a.serving.Load() {
		return DrainResult{}, fmt.Errorf("%w: the node has not started", ErrDrainRefused)
	}
	a.drainOnce.Do(func() {
		a.drainDone = make(chan struct{})
		a.drainErr = fmt.Errorf("%w: the node is stopping", ErrDrainRefused)
		started := a.life.Go(func(runCtx context.Context) {
			defer close(a.drainDone)
			dctx, cancel := context.WithTimeout(runCtx, a.cfg.DrainTimeout)
			defer cancel()
			start := time.Now()
			n := a.Node.Drain(dctx)
			a.drained, a.drainErr = DrainResult{AgentsDisconnected: n, Complete: dctx.Err() == nil}, nil
			a.log.Info("node drained", "agents_disconnected", n, "complete", a.drained.Complete, "duration", time.Since(start))
			if err := a.publisher.Publish(runCtx, nodebus.Fact{Event: domain.NodeDrained{NodeID: a.ID.ID, AgentsDisconnected: n}}); err != nil {
				a.log.Warn("node.drained not reported", "error", err)
			}
		})
		if !started {
			close(a.drainDone)
		}
	})
	select {
	case <-a.drainDone:
		return a.drained, a.drainErr
	case <-ctx.Done():
		return DrainResult{}, fmt.Errorf("node: drain still running: %w", ctx.Err())
	}
}

// RequestDrain asks the node whose health listener is at addr to drain, from this host, and waits
// for its answer (at most wait). An unspecified host in addr (":9091", "0.0.0.0:9091") means this
// host's loopback address.
func RequestDrain(ctx context.Context, addr string, wait time.Duration) (DrainResult, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return DrainResult{}, fmt.Errorf("%w: health address %q: %w", ErrInvalidConfig, addr, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+net.JoinHostPort(host, port)+"/drain", nil)
	if err != nil {
		return DrainResult{}, fmt.Errorf("node drain: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return DrainResult{}, fmt.Errorf("node drain: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil {
		return DrainResult{}, fmt.Errorf("node drain: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		return DrainResult{}, fmt.Errorf("%w: %s: %q", ErrDrainRefused, resp.Status, e.Error)
	}
	var res DrainResult
	if err := json.Unmarshal(body, &res); err != nil {
		return DrainResult{}, fmt.Errorf("node drain: answer: %w", err)
	}
	return res, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

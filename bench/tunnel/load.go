package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// smallBody is what /small answers: about the size of a short JSON API reply.
var smallBody = bytes.Repeat([]byte("x"), 128)

// originHandler is the upstream every measurement reaches.
func originHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /small", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(smallBody)))
		w.Write(smallBody)
	})
	mux.HandleFunc("GET /bulk", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		// 32 KiB writes, as io.Copy and most handlers make: the baseline is an ordinary Go origin.
		buf := make([]byte, 32<<10)
		for i := range buf {
			buf[i] = byte(i * 7)
		}
		for n > 0 {
			m := min(n, int64(len(buf)))
			if _, err := w.Write(buf[:m]); err != nil {
				return
			}
			n -= m
		}
	})
	// /stream sends n NDJSON lines spaced by interval, each stamped with its send time.
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		interval, _ := time.ParseDuration(r.URL.Query().Get("interval"))
		w.Header().Set("Content-Type", "application/x-ndjson")
		rc := http.NewResponseController(w)
		t := time.NewTimer(0)
		<-t.C
		for i := range n {
			if i > 0 {
				t.Reset(interval)
				<-t.C
			}
			fmt.Fprintf(w, `{"i":%d,"sent_ns":%d,"response":"token"}`+"\n", i, time.Now().UnixNano())
			if err := rc.Flush(); err != nil {
				return
			}
		}
	})
	return mux
}

type loadSpec struct {
	Mode        string        `json:"mode"` // bulk, rps, mix, stream, touch
	URL         string        `json:"url"`
	URLs        []string      `json:"urls,omitempty"`
	Mix         []mixTarget   `json:"mix,omitempty"`   // mix: the targets, taking turns
	Slice       time.Duration `json:"slice,omitempty"` // mix: how long each turn lasts
	Token       string        `json:"token,omitempty"`
	Concurrency int           `json:"concurrency,omitempty"`
	Duration    time.Duration `json:"duration,omitempty"`
	Streams     int           `json:"streams,omitempty"`
}

// mixTarget is one destination of a mix load.
type mixTarget struct {
	URL   string `json:"url"`
	Token string `json:"token,omitempty"`
}

type loadResult struct {
	Parts      []*loadResult `json:"parts,omitempty"` // mix: one result per target
	Bytes      int64         `json:"bytes,omitempty"`
	Seconds    float64       `json:"seconds"`
	Requests   int           `json:"requests,omitempty"`
	Errors     int           `json:"errors,omitempty"`
	LatencyUS  []float64     `json:"latency_us,omitempty"`     // rps: sorted sample (all, up to a cap)
	TTFBUS     []float64     `json:"ttfb_us,omitempty"`        // stream: per stream
	ChunkDelay []float64     `json:"chunk_delay_us,omitempty"` // stream: per chunk, send → receive
	// CPU seconds node and agent spent during a tunnel run (filled by Run).
	NodeCPU, AgentCPU, NodeAgentCPU float64 `json:"-"`
}

func newClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: conns, MaxIdleConns: conns, DisableCompression: true, ForceAttemptHTTP2: false,
	}}
}

func runLoad(ctx context.Context, s loadSpec) (*loadResult, error) {
	switch s.Mode {
	case "bulk":
		return loadBulk(ctx, s)
	case "rps":
		return loadRPS(ctx, s)
	case "mix":
		return loadMix(ctx, s)
	case "stream":
		return loadStream(ctx, s)
	case "touch":
		return loadTouch(ctx, s)
	}
	return nil, fmt.Errorf("unknown load mode %q", s.Mode)
}

func get(ctx context.Context, url, tok string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return nil, err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return req, nil
}

func loadBulk(ctx context.Context, s loadSpec) (*loadResult, error) {
	c := newClient(1)
	defer c.CloseIdleConnections()
	req, err := get(ctx, s.URL, s.Token)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("bulk: %d %s", resp.StatusCode, b)
	}
	// io.Copy's 32 KiB, as an ordinary client reads.
	buf := make([]byte, 32<<10)
	n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, resp.Body, buf)
	if err != nil {
		return nil, fmt.Errorf("bulk after %d bytes: %w", n, err)
	}
	return &loadResult{Bytes: n, Seconds: time.Since(start).Seconds()}, nil
}

// loadRPS runs Concurrency clients in closed loops for Duration (after a short warm-up that is
// not counted).
func loadRPS(ctx context.Context, s loadSpec) (*loadResult, error) {
	c := newClient(s.Concurrency)
	defer c.CloseIdleConnections()
	warm := min(s.Duration/5, 500*time.Millisecond)
	from := time.Now().Add(warm)
	var tr turnResult
	if err := mixTurn(ctx, c, mixTarget{URL: s.URL, Token: s.Token}, s.Concurrency, from, from.Add(s.Duration), &tr); err != nil {
		return nil, err
	}
	return tr.result(s.URL, s.Duration)
}

// mixSettle is the start of every turn of a mix load that is not counted: requests of the
// previous target are still completing and the new target's pipeline fills.
const mixSettle = 25 * time.Millisecond

// loadMix runs Concurrency clients in closed loops against the targets in turns of Slice each
// (in order, round robin) until every target had Duration of turns, so that all targets are
// measured over the same stretch of time: a machine whose speed drifts (other tenants, CPU
// boost) then tilts the comparison far less than back-to-back runs of seconds each. Each
// target keeps its own connections. A request counts for a turn when it starts after the
// turn's settle time and ends within the turn.
func loadMix(ctx context.Context, s loadSpec) (*loadResult, error) {
	n := len(s.Mix)
	if n == 0 || s.Slice <= mixSettle || s.Concurrency < 1 {
		return nil, fmt.Errorf("mix: need targets, a slice over %v and a concurrency", mixSettle)
	}
	clients := make([]*http.Client, n)
	for i := range clients {
		clients[i] = newClient(s.Concurrency)
		defer clients[i].CloseIdleConnections()
	}
	turns := int((s.Duration + s.Slice - 1) / s.Slice)
	warm := min(s.Duration/5, 500*time.Millisecond)
	// Warm-up: every target once, uncounted, so connections exist before the first turn.
	for i := range n {
		if err := mixTurn(ctx, clients[i], s.Mix[i], s.Concurrency, time.Now(), time.Now().Add(warm/time.Duration(n)), nil); err != nil {
			return nil, fmt.Errorf("mix warm-up %s: %w", s.Mix[i].URL, err)
		}
	}
	accs := make([]turnResult, n)
	measured := time.Duration(turns) * (s.Slice - mixSettle)
	for t := range turns * n {
		i := t % n
		start := time.Now()
		end := start.Add(s.Slice)
		var tr turnResult
		if err := mixTurn(ctx, clients[i], s.Mix[i], s.Concurrency, start.Add(mixSettle), end, &tr); err != nil {
			return nil, err
		}
		a := &accs[i]
		a.lat = append(a.lat, tr.lat...)
		a.errs += tr.errs
		if a.firstErr == nil {
			a.firstErr = tr.firstErr
		}
	}
	out := &loadResult{}
	for i := range accs {
		part, err := accs[i].result(s.Mix[i].URL, measured)
		if err != nil {
			return nil, err
		}
		out.Parts = append(out.Parts, part)
		out.Seconds += part.Seconds
	}
	return out, nil
}

// turnResult gathers the requests of one target.
type turnResult struct {
	lat      []float64
	errs     int
	firstErr error
}

// result is the rate and latencies over measured time; too many failures are an error.
func (r *turnResult) result(url string, measured time.Duration) (*loadResult, error) {
	reqs := len(r.lat)
	if reqs == 0 {
		return nil, fmt.Errorf("%s: no request succeeded: %v", url, r.firstErr)
	}
	if r.errs > reqs/100 {
		return nil, fmt.Errorf("%s: %d of %d requests failed: %v", url, r.errs, reqs+r.errs, r.firstErr)
	}
	slices.Sort(r.lat)
	return &loadResult{Requests: reqs, Errors: r.errs, Seconds: measured.Seconds(), LatencyUS: sample(r.lat, 20000)}, nil
}

// mixTurn runs conc closed-loop clients against t until end; requests that start at or after
// from and end by end are recorded in r (nil: none).
func mixTurn(ctx context.Context, c *http.Client, t mixTarget, conc int, from, end time.Time, r *turnResult) error {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			var local []float64
			buf := make([]byte, 4096)
			var nerr int
			var ferr error
			for {
				t0 := time.Now()
				if !t0.Before(end) || ctx.Err() != nil {
					break
				}
				req, _ := get(ctx, t.URL, t.Token)
				resp, err := c.Do(req)
				if err == nil {
					_, err = io.CopyBuffer(io.Discard, resp.Body, buf)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				t1 := time.Now()
				if r == nil || t0.Before(from) || t1.After(end) {
					continue
				}
				if err != nil {
					nerr++
					if ferr == nil {
						ferr = err
					}
					continue
				}
				local = append(local, float64(t1.Sub(t0).Nanoseconds())/1000)
			}
			if r == nil {
				return
			}
			mu.Lock()
			r.lat = append(r.lat, local...)
			r.errs += nerr
			if r.firstErr == nil {
				r.firstErr = ferr
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return ctx.Err()
}

// sample thins a sorted slice evenly to at most n values, keeping the extremes.
func sample(sorted []float64, n int) []float64 {
	if len(sorted) <= n {
		return sorted
	}
	out := make([]float64, n)
	for i := range out {
		out[i] = sorted[i*(len(sorted)-1)/(n-1)]
	}
	return out
}

// loadStream reads s.Streams streamed responses and times every chunk. With s.Mix the targets take
// turns stream by stream (direct, tunnel, relays, direct, …), so all of them see the same minutes of
// a machine whose speed drifts; the result then has one part per target.
func loadStream(ctx context.Context, s loadSpec) (*loadResult, error) {
	targets := s.Mix
	if len(targets) == 0 {
		targets = []mixTarget{{URL: s.URL, Token: s.Token}}
	}
	c := newClient(len(targets))
	defer c.CloseIdleConnections()
	parts := make([]*loadResult, len(targets))
	for i := range parts {
		parts[i] = &loadResult{}
	}
	for range s.Streams {
		for i, t := range targets {
			start := time.Now()
			if err := readStream(ctx, c, t, parts[i]); err != nil {
				return nil, fmt.Errorf("%s: %w", t.URL, err)
			}
			parts[i].Seconds += time.Since(start).Seconds()
		}
	}
	if len(s.Mix) == 0 {
		return parts[0], nil
	}
	return &loadResult{Parts: parts}, nil
}

// readStream reads one streamed response, adding its time to first byte and each chunk's delay
// (the origin's send stamp to the line's arrival) to res.
func readStream(ctx context.Context, c *http.Client, t mixTarget, res *loadResult) error {
	req, err := get(ctx, t.URL, t.Token)
	if err != nil {
		return err
	}
	t0 := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("stream: status %d", resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	first := true
	for {
		line, err := br.ReadBytes('\n')
		now := time.Now()
		if len(line) > 0 {
			if first {
				res.TTFBUS = append(res.TTFBUS, float64(now.Sub(t0).Nanoseconds())/1000)
				first = false
			}
			var m struct {
				SentNS int64 `json:"sent_ns"`
			}
			if json.Unmarshal(line, &m) == nil {
				res.ChunkDelay = append(res.ChunkDelay, float64(now.UnixNano()-m.SentNS)/1000)
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// loadTouch sends one small request to each URL, one after another.
func loadTouch(ctx context.Context, s loadSpec) (*loadResult, error) {
	c := newClient(1)
	defer c.CloseIdleConnections()
	start := time.Now()
	for _, u := range s.URLs {
		req, _ := get(ctx, u, s.Token)
		resp, err := c.Do(req)
		if err != nil {
			return nil, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return nil, errors.New("touch " + u + ": " + resp.Status)
		}
	}
	return &loadResult{Requests: len(s.URLs), Seconds: time.Since(start).Seconds()}, nil
}

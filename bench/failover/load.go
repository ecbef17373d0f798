package failover

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tunnelplane/tunnelplane/bench/stats"
)

// call is one call of the load: where it entered, when it started and ended, and how.
type call struct {
	node       string
	start, end time.Time
	ok         bool
}

// load sends Rate POST calls a second, each with an id of its own, entering at the nodes in
// turn; from the kill on it leaves the killed node out, as a load balancer would.
type load struct {
	o      *Options
	sys    *system
	client *http.Client

	mu     sync.Mutex
	killed string
	calls  []*call
	wg     sync.WaitGroup
}

func newLoad(o *Options, sys *system) *load {
	tr := &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 0, IdleConnTimeout: time.Minute}
	return &load{o: o, sys: sys, client: &http.Client{Transport: tr, Timeout: o.CallTimeout}}
}

func (l *load) run(ctx context.Context) {
	interval := time.Second / time.Duration(l.o.Rate)
	began := time.Now()
	for i := 0; ; i++ {
		due := began.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return
			}
		} else if ctx.Err() != nil {
			return
		}
		l.mu.Lock()
		var live []*nodeProc
		for _, n := range l.sys.nodes {
			if n.name != l.killed {
				live = append(live, n)
			}
		}
		n := live[i%len(live)]
		c := &call{node: n.name, start: time.Now()}
		l.calls = append(l.calls, c)
		l.mu.Unlock()
		l.wg.Add(1)
		go func(id int) {
			defer l.wg.Done()
			c.ok = l.do(n, id)
			c.end = time.Now()
		}(i)
	}
}

// do makes one call and says whether it succeeded (2xx with the upstream's answer).
func (l *load) do(n *nodeProc, id int) bool {
	req, err := http.NewRequest(http.MethodPost, l.sys.callURL(n), strings.NewReader(`{"prompt":"failover"}`))
	if err != nil {
		return false
	}
	req.Header.Set("Authorization", "Bearer "+l.sys.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Bench-Call", fmt.Sprint(id))
	resp, err := l.client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return err == nil && resp.StatusCode == http.StatusOK && string(b) == `{"ok":true}`
}

// killAt leaves n out of the load from now on and returns the time.
func (l *load) killAt(n *nodeProc) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.killed = n.name
	return time.Now()
}

// finished waits for every call to end and returns them.
func (l *load) finished() []*call {
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls
}

// summarize computes the result from the calls around the kill of victim: kill is when it was
// signalled, died when it had exited.
func summarize(calls []*call, kill, died time.Time, victim string, o Options) *Result {
	res := &Result{Nodes: o.Nodes, Rate: o.Rate, Calls: len(calls), Killed: victim}
	if len(calls) > 1 {
		res.RateOK = float64(len(calls)-1) / calls[len(calls)-1].start.Sub(calls[0].start).Seconds()
	}
	// Per node left: the end of the first call after the kill that succeeded with all later ones.
	recovered := map[string]time.Time{}
	bad := map[string]bool{}
	var after []float64
	for i := len(calls) - 1; i >= 0; i-- {
		c := calls[i]
		if c.start.Before(kill) || c.node == victim {
			continue
		}
		switch {
		case !c.ok:
			bad[c.node] = true
		case !bad[c.node]:
			recovered[c.node] = c.end
		}
	}
	res.RecoverMS = 0
	for node := range nodesOf(calls) {
		if node == victim {
			continue
		}
		at, ok := recovered[node]
		if !ok {
			res.RecoverMS = -1 // never recovered
			break
		}
		res.RecoverMS = max(res.RecoverMS, float64(at.Sub(kill).Microseconds())/1000)
	}
	for _, c := range calls {
		inFlight := c.start.Before(died) && c.end.After(kill)
		if inFlight {
			res.InFlightAtKill++
		}
		if !c.ok && (c.node != victim || inFlight) {
			res.FailedCalls++
		}
		if c.ok && !c.start.Before(kill) && c.node != victim {
			after = append(after, float64(c.end.Sub(c.start).Microseconds())/1000)
		}
	}
	if len(after) > 0 {
		after = stats.Sorted(after)
		res.P50AfterMS, res.P99AfterMS = stats.Quantile(after, .5), stats.Quantile(after, .99)
	}
	return res
}

func nodesOf(calls []*call) map[string]bool {
	m := map[string]bool{}
	for _, c := range calls {
		m[c.node] = true
	}
	return m
}

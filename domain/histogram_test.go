package domain

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestHistogramBucketsFollowTheLayout(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int
	}{
		{0, 0}, {time.Microsecond, 0}, {2 * time.Microsecond, 8}, {3 * time.Microsecond, 13}, // 2^(12/8)=2.83 < 3 ≤ 2^(13/8)=3.08
		{4 * time.Microsecond, 16}, {time.Millisecond, 80}, // 2^(79/8)=946 < 1000 ≤ 2^(80/8)=1024
		{time.Second, 160}, // 2^(159/8)=9.75e5 < 1e6 ≤ 2^(160/8)=1.05e6
		{1000 * time.Hour, HistogramMaxIndex},
	} {
		if got := HistogramIndex(tc.d); got != tc.want {
			t.Errorf("HistogramIndex(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
	// Every duration lands in the bucket whose bounds hold it.
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		us := 2 + r.Int64N(int64(1)<<34)
		i := HistogramIndex(time.Duration(us) * time.Microsecond)
		if i == HistogramMaxIndex {
			continue
		}
		lo, hi := math.Pow(2, float64(i-1)/8), math.Pow(2, float64(i)/8)
		if !(float64(us) > lo*(1-1e-12) && float64(us) <= hi*(1+1e-12)) {
			t.Fatalf("%d µs in bucket %d = (%g, %g]", us, i, lo, hi)
		}
	}
}

func TestHistogramQuantilesOfMergedBucketsStayWithinTheStatedError(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var a, b [HistogramBuckets]int64
	var all []float64
	for i := range 20000 {
		us := math.Exp(r.NormFloat64()*1.5 + 9) // log-normal around 8 ms
		all = append(all, us)
		idx := HistogramIndex(time.Duration(us * float64(time.Microsecond)))
		if i%2 == 0 {
			a[idx]++
		} else {
			b[idx]++
		}
	}
	// Merge through the wire form, as a rollup does.
	var merged [HistogramBuckets]int64
	for _, h := range []*Histogram{HistogramOf(&a), HistogramOf(&b)} {
		raw, _ := json.Marshal(h)
		var back Histogram
		if err := json.Unmarshal(raw, &back); err != nil || back.Validate() != nil {
			t.Fatalf("round trip: %v %v", err, back.Validate())
		}
		back.AddTo(&merged)
	}
	slices.Sort(all)
	for _, q := range []float64{0.5, 0.95, 0.99} {
		exact := all[int(math.Ceil(q*float64(len(all))))-1]
		got := float64(HistogramQuantile(&merged, q)) / float64(time.Microsecond)
		if rel := math.Abs(got-exact) / exact; rel > HistogramRelativeError+1e-3 {
			t.Errorf("p%v: %g µs, exact %g µs, relative error %.4f > %.4f", q*100, got, exact, rel, HistogramRelativeError)
		}
	}
}

func TestHostileHistogramsAndWindowsAreRefused(t *testing.T) {
	ok := UsageRecorded{OrgID: "o", TunnelID: "t", CallerKind: CallerUser, CallerID: "u1", Requests: 1,
		WindowStart: time.Unix(0, 0), WindowEnd: time.Unix(10, 0)}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*UsageRecorded){
		"offset past the layout": func(u *UsageRecorded) { u.Latency = &Histogram{Offset: HistogramBuckets, Counts: []int64{1}} },
		"too many buckets":       func(u *UsageRecorded) { u.TTFB = &Histogram{Offset: 1, Counts: make([]int64, HistogramBuckets)} },
		"negative offset":        func(u *UsageRecorded) { u.TTFB = &Histogram{Offset: -1, Counts: []int64{1}} },
		"negative count":         func(u *UsageRecorded) { u.TTFB = &Histogram{Counts: []int64{-1}} },
		"overflowing total":      func(u *UsageRecorded) { u.TTFB = &Histogram{Counts: []int64{math.MaxInt64, 1}} },
		"user without id":        func(u *UsageRecorded) { u.CallerID = "" },
		"anonymous with id":      func(u *UsageRecorded) { u.CallerKind = CallerAnonymous },
		"unknown kind":           func(u *UsageRecorded) { u.CallerKind = "robot" },
		"negative bytes":         func(u *UsageRecorded) { u.BytesIn = -1 },
		"empty window":           func(u *UsageRecorded) { u.WindowEnd = u.WindowStart },
	} {
		u := ok
		mut(&u)
		if err := u.Validate(); !errors.Is(err, ErrInvalidFact) && !errors.Is(err, ErrInvalidHistogram) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestUsageV1IsUpcastToTTFBBuckets(t *testing.T) {
	v1 := `{"node_id":"n","org_id":"o","tunnel_id":"t","window_start":"2026-01-01T00:00:00Z","window_end":"2026-01-01T00:00:10Z",` +
		`"requests":5,"bytes_in":10,"bytes_out":20,"errors":{"upstream":1},"latency_ms_buckets":{"5":3,"1000":1,"+Inf":1}}`
	raw, err := UpcastUsageV1([]byte(v1))
	if err != nil {
		t.Fatal(err)
	}
	e, err := Decode(TypeUsageRecorded, raw)
	if err != nil {
		t.Fatal(err)
	}
	u := e.(*UsageRecorded)
	if u.Requests != 5 || u.BytesIn != 10 || u.BytesOut != 20 || u.Errors["upstream"] != 1 || u.CallerKind != "" || u.Latency != nil {
		t.Fatalf("%+v", u)
	}
	var c [HistogramBuckets]int64
	u.TTFB.AddTo(&c)
	if c[HistogramIndex(5*time.Millisecond)] != 3 || c[HistogramIndex(time.Second)] != 1 || c[HistogramMaxIndex] != 1 || u.TTFB.Count() != 5 {
		t.Fatalf("ttfb %+v", u.TTFB)
	}
	if err := u.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := UpcastUsageV1([]byte(`{"latency_ms_buckets":{"x":1}}`)); !errors.Is(err, ErrInvalidFact) {
		t.Fatalf("bad bound: %v", err)
	}
	for _, et := range EventTypes() {
		if et.Name == TypeUsageRecorded && (et.SchemaVersion != 2 || et.Upcasters[1] == nil) {
			t.Fatalf("usage.recorded registered as %+v", et)
		}
	}
}

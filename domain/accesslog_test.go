package domain

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestAccessCallsValidate(t *testing.T) {
	ok := AccessCall{At: time.Date(2026, 12, 2, 15, 0, 0, 0, time.UTC), OrgID: "0190b8a5-6c6e-7000-8000-000000000001",
		TunnelID: "0190b8a5-6c6e-7000-8000-000000000002", CallerKind: CallerUser, CallerID: "alice", Method: "POST",
		Route: "/v1/chat/completions", Status: 200, BytesIn: 10, BytesOut: 20, DurationUS: 300}
	b := AccessCallsRecorded{NodeID: "n", Calls: []AccessCall{ok}}
	if err := b.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*AccessCallsRecorded){
		"too many calls":      func(b *AccessCallsRecorded) { b.Calls = make([]AccessCall, MaxCallsPerBatch+1) },
		"empty":               func(b *AccessCallsRecorded) { b.Calls = nil },
		"negative drops":      func(b *AccessCallsRecorded) { b.Dropped = -1 },
		"tunnel not an id":    func(b *AccessCallsRecorded) { b.Calls[0].TunnelID = "t" },
		"no time":             func(b *AccessCallsRecorded) { b.Calls[0].At = time.Time{} },
		"long route":          func(b *AccessCallsRecorded) { b.Calls[0].Route = "/" + strings.Repeat("a", MaxCallRoute) },
		"control in route":    func(b *AccessCallsRecorded) { b.Calls[0].Route = "/a\nb" },
		"invalid UTF-8 route": func(b *AccessCallsRecorded) { b.Calls[0].Route = "/\xff" },
		"method with space":   func(b *AccessCallsRecorded) { b.Calls[0].Method = "GET /" },
		"long method":         func(b *AccessCallsRecorded) { b.Calls[0].Method = strings.Repeat("M", MaxCallMethod+1) },
		"status past 999":     func(b *AccessCallsRecorded) { b.Calls[0].Status = 1000 },
		"negative bytes":      func(b *AccessCallsRecorded) { b.Calls[0].BytesOut = -1 },
		"user without id":     func(b *AccessCallsRecorded) { b.Calls[0].CallerID = "" },
		"anonymous with id":   func(b *AccessCallsRecorded) { b.Calls[0].CallerKind = CallerAnonymous },
		"unknown kind":        func(b *AccessCallsRecorded) { b.Calls[0].CallerKind = "robot" },
		"long caller":         func(b *AccessCallsRecorded) { b.Calls[0].CallerID = strings.Repeat("u", 129) },
	} {
		c := b
		c.Calls = []AccessCall{ok}
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := (&AccessCallsRecorded{NodeID: "n", Dropped: 5}).Validate(); err != nil {
		t.Errorf("drops alone: %v", err)
	}
}

// Whatever path a caller sends, CallRoute makes a route a record may carry.
func TestCallRoute(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/v1/models", "/v1/models"},
		{"/a\x00b\x7fc", "/a?b?c"},
		{"/caf\xc3\xa9", "/café"},
		{"/\xff\xfe", "/??"},
		{strings.Repeat("a", 300), strings.Repeat("a", MaxCallRoute)},
		{strings.Repeat("é", 200), strings.Repeat("é", MaxCallRoute/2)},
	} {
		if got := CallRoute([]byte(tc.in)); got != tc.want {
			t.Errorf("CallRoute(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzCallRoute(f *testing.F) {
	f.Add([]byte("/v1/chat/completions"))
	f.Add([]byte("/\xff\x00" + strings.Repeat("é", 300)))
	f.Fuzz(func(t *testing.T, path []byte) {
		r := CallRoute(path)
		c := AccessCall{At: time.Now(), OrgID: "0190b8a5-6c6e-7000-8000-000000000001", TunnelID: "0190b8a5-6c6e-7000-8000-000000000002",
			CallerKind: CallerAnonymous, Method: "GET", Route: r}
		if err := c.validate(); err != nil || !utf8.ValidString(r) {
			t.Fatalf("CallRoute(%q) = %q: %v", path, r, err)
		}
	})
}

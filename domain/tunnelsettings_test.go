package domain

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestCanonicalOrigin(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want string }{
		{"https://app.example.com", "https://app.example.com"},
		{"HTTPS://App.Example.COM", "https://app.example.com"},
		{"https://app.example.com:443", "https://app.example.com"},
		{"http://localhost:80", "http://localhost"},
		{"http://localhost:5173", "http://localhost:5173"},
		{"https://127.0.0.1:8443", "https://127.0.0.1:8443"},
		{"http://[::1]:3000", "http://[::1]:3000"},
		{"https://app.example.com/", ""},
		{"https://app.example.com/path", ""},
		{"https://app.example.com?x=1", ""},
		{"https://app.example.com#f", ""},
		{"https://user@app.example.com", ""},
		{"https://*.example.com", ""},
		{"ftp://app.example.com", ""},
		{"null", ""},
		{"app.example.com", ""},
		{"https://", ""},
		{"https://app.example.com:0", ""},
		{"https://app.example.com:70000", ""},
		{"https://app_x.example.com", ""},
		{"https://app.example.com\n", ""},
	} {
		got, err := CanonicalOrigin(c.in)
		if got != c.want || (err == nil) != (c.want != "") {
			t.Errorf("CanonicalOrigin(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestCanonicalCORS(t *testing.T) {
	t.Parallel()
	got, err := CanonicalCORS(TunnelCORS{Mode: CORSOrigins, Origins: []string{"https://b.example", "HTTPS://a.example:443", "https://b.example"}})
	if err != nil || strings.Join(got.Origins, " ") != "https://a.example https://b.example" {
		t.Fatalf("got %+v, %v", got, err)
	}
	many := make([]string, MaxCORSOrigins+1)
	for i := range many {
		many[i] = fmt.Sprintf("https://o%d.example", i)
	}
	for _, c := range []TunnelCORS{
		{Mode: "everything"},
		{Mode: CORSOrigins},
		{Mode: CORSOrigins, Origins: many},
		{Mode: CORSOrigins, Origins: []string{"https://ok.example", "https://bad.example/path"}},
		{Mode: CORSPassthrough, Origins: []string{"https://a.example"}},
		{Mode: CORSOff, Origins: []string{"https://a.example"}},
	} {
		if _, err := CanonicalCORS(c); err == nil {
			t.Errorf("CanonicalCORS(%+v) accepted", c)
		}
	}
}

func TestLabels(t *testing.T) {
	t.Parallel()
	many := map[string]string{}
	for i := range MaxTunnelLabels + 1 {
		many[fmt.Sprint("k", i)] = "v"
	}
	for _, c := range []struct {
		labels   map[string]string
		selector bool
		ok       bool
	}{
		{nil, false, true},
		{nil, true, false},
		{map[string]string{"team": "ml", "cost-center": "r.d_1"}, false, true},
		{map[string]string{"Team": "ml"}, false, false},
		{map[string]string{"team": ""}, false, false},
		{map[string]string{"team": "-ml"}, false, false},
		{map[string]string{"team": "ml\n"}, false, false},
		{map[string]string{"team": strings.Repeat("a", 64)}, false, false},
		{many, false, false},
		{map[string]string{"a": "1", "b": "2", "c": "3", "d": "4", "e": "5", "f": "6", "g": "7", "h": "8", "i": "9"}, true, false},
	} {
		if err := CheckLabels(c.labels, c.selector); (err == nil) != c.ok {
			t.Errorf("CheckLabels(%v, %v) = %v", c.labels, c.selector, err)
		}
	}
	if _, err := ParseLabels([]string{"team=ml", "team=cv"}); err == nil {
		t.Error("a key given twice was accepted")
	}
	if _, err := ParseLabels([]string{"team"}); err == nil {
		t.Error("a pair without '=' was accepted")
	}
	sel := map[string]string{"team": "ml"}
	for _, c := range []struct {
		sel, labels map[string]string
		want        bool
	}{
		{sel, map[string]string{"team": "ml", "env": "dev"}, true},
		{sel, map[string]string{"team": "cv"}, false},
		{sel, nil, false},
		{nil, map[string]string{"team": "ml"}, false},
		{map[string]string{"team": "ml", "env": "prod"}, map[string]string{"team": "ml", "env": "dev"}, false},
	} {
		if got := LabelsMatch(c.sel, c.labels); got != c.want {
			t.Errorf("LabelsMatch(%v, %v) = %v", c.sel, c.labels, got)
		}
	}
}

// Labels and CORS are recorded in tunnel.created and tunnel.updated, only when they change, and
// rebuilt from the stream.
func TestTunnelLabelsAndCORS(t *testing.T) {
	t.Parallel()
	if _, err := CreateTunnel(NewTunnel{tunnelID, orgID, "alice", "llm", "http://127.0.0.1:1", "", map[string]string{"Team": "ml"}}); !fields(err)["labels"] {
		t.Fatalf("bad labels at create: %v", err)
	}
	created, err := CreateTunnel(NewTunnel{tunnelID, orgID, "alice", "llm", "http://127.0.0.1:1", "", map[string]string{"team": "ml"}})
	if err != nil || created.Labels["team"] != "ml" {
		t.Fatalf("created = %+v, %v", created, err)
	}
	tun, _ := RehydrateTunnel([]Recorded{rec(created, 1)})
	if tun.Labels()["team"] != "ml" || tun.CORS().Mode != CORSOff {
		t.Fatalf("labels %v cors %+v", tun.Labels(), tun.CORS())
	}
	same := map[string]string{"team": "ml"}
	off := TunnelCORS{Mode: CORSOff}
	if ev, err := tun.Update(TunnelChanges{Labels: &same, CORS: &off}); ev != nil || err != nil {
		t.Fatalf("nothing changed, yet %+v, %v", ev, err)
	}
	bad := TunnelCORS{Mode: CORSOrigins, Origins: []string{"https://a.example/x"}}
	if _, err := tun.Update(TunnelChanges{CORS: &bad}); !fields(err)["cors"] {
		t.Fatalf("bad origin: %v", err)
	}
	relabel := map[string]string{"team": "cv"}
	cors := TunnelCORS{Mode: CORSOrigins, Origins: []string{"HTTPS://App.Example"}}
	ev, err := tun.Update(TunnelChanges{Labels: &relabel, CORS: &cors})
	if err != nil || ev == nil || ev.Name != nil || (*ev.Labels)["team"] != "cv" || ev.CORS.Origins[0] != "https://app.example" {
		t.Fatalf("update = %+v, %v", ev, err)
	}
	b, _ := json.Marshal(ev)
	if !strings.Contains(string(b), `"labels":{"team":"cv"}`) || !strings.Contains(string(b), `"cors":{"mode":"origins","origins":["https://app.example"]}`) {
		t.Fatalf("recorded %s", b)
	}
	tun, _ = RehydrateTunnel([]Recorded{rec(created, 1), rec(*ev, 2)})
	if tun.Labels()["team"] != "cv" || tun.CORS().Origins[0] != "https://app.example" {
		t.Fatalf("rebuilt labels %v cors %+v", tun.Labels(), tun.CORS())
	}
	none := map[string]string{}
	ev, err = tun.Update(TunnelChanges{Labels: &none})
	if err != nil || ev == nil || ev.Labels == nil || len(*ev.Labels) != 0 {
		t.Fatalf("removing the labels = %+v, %v", ev, err)
	}
	if b, _ := json.Marshal(ev); !strings.Contains(string(b), `"labels":{}`) {
		t.Fatalf("removing the labels recorded %s", b)
	}
}

func TestLabelAccessKeys(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	in := NewAccessKey{KeyID: tokenID, IssuedBy: "alice", SecretHash: HashAccessKey(AccessKeyPrefix + "s"), Now: now, TTL: time.Hour}
	ev, err := IssueLabelAccessKey(orgID, map[string]string{"team": "ml"}, in)
	if err != nil || ev.TunnelID != "" || ev.OrgID != orgID || ev.Selector["team"] != "ml" {
		t.Fatalf("issued %+v, %v", ev, err)
	}
	if _, err := IssueLabelAccessKey(orgID, nil, in); !fields(err)["selector"] {
		t.Fatalf("no selector: %v", err)
	}
	if _, err := IssueLabelAccessKey(orgID, map[string]string{"team": "ML"}, in); !fields(err)["selector"] {
		t.Fatalf("bad selector: %v", err)
	}
	in.TTL = 0
	if _, err := IssueLabelAccessKey(orgID, map[string]string{"team": "ml"}, in); !fields(err)["ttl"] {
		t.Fatalf("no ttl: %v", err)
	}
	k, err := RehydrateAccessKey([]Recorded{rec(ev, 1)})
	if err != nil || k.Selector()["team"] != "ml" || k.TunnelID() != "" {
		t.Fatalf("rebuilt %+v, %v", k, err)
	}
}

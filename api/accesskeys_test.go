package api_test

import (
	"bytes"
	"strconv"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/domain"
)

// TestAccessKeysAPI: the secret is in the issuing answer only (not cached, not in any record the
// API serves); listing by tunnel, revoking, and the states.
func TestAccessKeysAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	e.createOrg(root, "acme", "olga")
	olga := e.token("olga")
	llm := e.write(201, "POST", "/api/v1/tunnels?org=acme", olga, api.TunnelInput{Name: "llm", Upstream: "http://127.0.0.1:11434"}).ID
	web := e.write(201, "POST", "/api/v1/tunnels?org=acme", olga, api.TunnelInput{Name: "web", Upstream: "http://127.0.0.1:8080"}).ID

	r := e.must(201, "POST", "/api/v1/tunnels/"+llm+"/access-keys?org=acme", olga, map[string]any{"ttl": "30d", "cidrs": []string{"10.1.0.0/16", "192.0.2.1"}, "rate_tier": "free"})
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q", r.header.Get("Cache-Control"))
	}
	var k struct {
		ID        string    `json:"id"`
		Secret    string    `json:"secret"`
		Position  uint64    `json:"position"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	r.decode(t, &k)
	if len(k.Secret) < 40 || k.Secret[:4] != domain.AccessKeyPrefix || time.Until(k.ExpiresAt) < 29*24*time.Hour {
		t.Fatalf("issued %+v", k)
	}
	// Without a body: the defaults; a TTL past a year or a bad prefix is refused.
	other := e.write(201, "POST", "/api/v1/tunnels/"+web+"/access-keys?org=acme", olga, nil)
	e.must(422, "POST", "/api/v1/tunnels/"+llm+"/access-keys?org=acme", olga, map[string]any{"ttl": "400d"}).problem(t)
	e.must(422, "POST", "/api/v1/tunnels/"+llm+"/access-keys?org=acme", olga, map[string]any{"ttl": "5x"}).problem(t)
	e.must(422, "POST", "/api/v1/tunnels/"+llm+"/access-keys?org=acme", olga, map[string]any{"cidrs": []string{"10.0.0.0/40"}}).problem(t)

	var list api.List[api.AccessKey]
	lr := e.must(200, "GET", "/api/v1/access-keys?org=acme&tunnel_id="+llm+"&wait_for="+strconv.FormatUint(other.Position, 10), olga, nil)
	lr.decode(t, &list)
	if len(list.Items) != 1 || list.Items[0].ID != k.ID || list.Items[0].State != "active" ||
		len(list.Items[0].CIDRs) != 2 || list.Items[0].CIDRs[1] != "192.0.2.1/32" || list.Items[0].RateTier == nil {
		t.Fatalf("list by tunnel: %s", lr.body)
	}
	if bytes.Contains(lr.body, []byte(k.Secret)) || bytes.Contains(lr.body, []byte(domain.HashAccessKey(k.Secret))) {
		t.Fatal("the list shows the secret or its hash")
	}
	rv := e.write(200, "DELETE", "/api/v1/access-keys/"+k.ID+"?org=acme&reason=leaked", olga, nil)
	var got api.AccessKey
	e.must(200, "GET", "/api/v1/access-keys/"+k.ID+"?org=acme&wait_for="+strconv.FormatUint(rv.Position, 10), olga, nil).decode(t, &got)
	if got.State != "revoked" || got.RevokeReason == nil || *got.RevokeReason != "leaked" {
		t.Fatalf("after revoke: %+v", got)
	}
	e.must(409, "DELETE", "/api/v1/access-keys/"+k.ID+"?org=acme", olga, nil).problem(t)
	e.must(200, "GET", "/api/v1/access-keys?org=acme&state=active", olga, nil).decode(t, &list)
	if len(list.Items) != 1 || list.Items[0].ID != other.ID {
		t.Fatalf("active keys: %+v", list.Items)
	}
}

func TestParseTTL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{"30d": 720 * time.Hour, "1d": 24 * time.Hour, "90m": 90 * time.Minute, "720h": 720 * time.Hour} {
		if got, ok := api.ParseTTL(in); !ok || got != want {
			t.Errorf("ParseTTL(%q) = %s %v, want %s", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "d", "-1d", "1.5d", "x", "30"} {
		if _, ok := api.ParseTTL(in); ok {
			t.Errorf("ParseTTL(%q) accepted", in)
		}
	}
}

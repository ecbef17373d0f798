package api_test

import (
	"strconv"
	"testing"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/domain"
)

// A tunnel's labels (at create, by PATCH) and CORS setting are validated, recorded and shown with
// the tunnel; an access key for a label selector is issued by POST /access-keys and shown with
// its selector.
func TestTunnelLabelsCORSAndLabelKeysAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	e.createOrg(root, "acme", "olga")
	olga := e.token("olga")
	created := e.write(201, "POST", "/api/v1/tunnels?org=acme", olga, api.TunnelInput{Name: "llm", Upstream: "http://127.0.0.1:11434",
		Labels: map[string]string{"team": "ml"}})
	var got api.Tunnel
	e.must(200, "GET", "/api/v1/tunnels/"+created.ID+"?org=acme&wait_for="+strconv.FormatUint(created.Position, 10), olga, nil).decode(t, &got)
	if got.Labels["team"] != "ml" || got.CORS == nil || got.CORS.Mode != domain.CORSOff {
		t.Fatalf("created: %+v", got)
	}
	e.must(422, "POST", "/api/v1/tunnels?org=acme", olga, map[string]any{"name": "bad", "upstream": "http://127.0.0.1:1", "labels": map[string]string{"Team": "ML"}}).problem(t)
	path := "/api/v1/tunnels/" + created.ID + "?org=acme"
	e.must(422, "PATCH", path, olga, map[string]any{"cors": map[string]any{"mode": "origins", "origins": []string{"https://app.example.com/app"}}}).problem(t)
	e.must(422, "PATCH", path, olga, map[string]any{"cors": map[string]any{"mode": "everyone"}}).problem(t)
	up := e.write(200, "PATCH", path, olga, map[string]any{"labels": map[string]string{"team": "ml", "env": "dev"},
		"cors": map[string]any{"mode": "origins", "origins": []string{"HTTPS://App.Example.com:443"}}})
	e.must(200, "GET", path+"&wait_for="+strconv.FormatUint(up.Position, 10), olga, nil).decode(t, &got)
	if len(got.Labels) != 2 || got.Labels["env"] != "dev" || got.CORS.Mode != domain.CORSOrigins || len(got.CORS.Origins) != 1 ||
		got.CORS.Origins[0] != "https://app.example.com" {
		t.Fatalf("updated: %+v", got)
	}
	up = e.write(200, "PATCH", path, olga, map[string]any{"labels": map[string]string{}, "cors": map[string]any{"mode": "passthrough"}})
	var list api.List[api.Tunnel]
	e.must(200, "GET", "/api/v1/tunnels?org=acme&wait_for="+strconv.FormatUint(up.Position, 10), olga, nil).decode(t, &list)
	if len(list.Items) != 1 || len(list.Items[0].Labels) != 0 || list.Items[0].CORS.Mode != domain.CORSPassthrough {
		t.Fatalf("listed: %+v", list.Items)
	}

	k := e.write(201, "POST", "/api/v1/access-keys?org=acme", olga, map[string]any{"selector": map[string]string{"team": "ml"}, "ttl": "30d"})
	var key api.AccessKey
	e.must(200, "GET", "/api/v1/access-keys/"+k.ID+"?org=acme&wait_for="+strconv.FormatUint(k.Position, 10), olga, nil).decode(t, &key)
	if key.TunnelID != "" || key.Selector["team"] != "ml" || key.State != "active" {
		t.Fatalf("label key: %+v", key)
	}
	e.must(422, "POST", "/api/v1/access-keys?org=acme", olga, map[string]any{"ttl": "30d"}).problem(t)
	e.must(422, "POST", "/api/v1/access-keys?org=acme", olga, map[string]any{"selector": map[string]string{}}).problem(t)
	var keys api.List[api.AccessKey]
	e.must(200, "GET", "/api/v1/access-keys?org=acme", olga, nil).decode(t, &keys)
	if len(keys.Items) != 1 || keys.Items[0].ID != k.ID {
		t.Fatalf("keys: %+v", keys.Items)
	}
	e.write(200, "DELETE", "/api/v1/access-keys/"+k.ID+"?org=acme", olga, nil)
}

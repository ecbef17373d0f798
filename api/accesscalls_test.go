package api_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tunnelplane/tunnelplane/api"
)

// The access-call reads and the setting refuse what a caller should not send: an unknown setting,
// a status outside 100..999, an over-long caller, a cursor of another list or a forged one, a
// time that is not RFC 3339; another organization's tunnel, or none, is not found. A setting
// repeated changes nothing.
func TestAccessCallsRefuseHostileInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	e.createOrg(root, "acme", "alice")
	e.createOrg(root, "globex", "zed")
	tun := e.write(201, "POST", "/api/v1/tunnels?org=acme", root, map[string]string{"name": "llm", "upstream": "http://127.0.0.1:1"}).ID
	other := e.write(201, "POST", "/api/v1/tunnels?org=globex", root, map[string]string{"name": "llm", "upstream": "http://127.0.0.1:1"}).ID
	base := "/api/v1/tunnels/" + tun

	e.must(422, "PUT", base+"/access-log?org=acme", root, map[string]string{"access_log": "sometimes"}).problem(t)
	set := e.write(200, "PUT", base+"/access-log?org=acme", root, map[string]string{"access_log": "calls"})
	if again := e.write(200, "PUT", base+"/access-log?org=acme", root, map[string]string{"access_log": "calls"}); !again.Noop {
		t.Fatalf("a repeated setting wrote %+v", again)
	}
	var tunnel api.Tunnel
	e.must(200, "GET", fmt.Sprintf("%s?org=acme&wait_for=%d", base, set.Position), root, nil).decode(t, &tunnel)
	if tunnel.AccessLog != "calls" || tunnel.Version != 2 {
		t.Fatalf("tunnel after the setting: access log %q, version %d", tunnel.AccessLog, tunnel.Version)
	}

	var empty api.List[api.AccessCall]
	e.must(200, "GET", base+"/access?org=acme&wait_for=latest", root, nil).decode(t, &empty)
	if len(empty.Items) != 0 || empty.Items == nil {
		t.Fatalf("a tunnel without calls: %+v", empty)
	}
	for _, q := range []string{
		"status=99", "status=1000", "status=ok", "caller=" + strings.Repeat("u", 257), "from=yesterday",
		"from=2026-12-02T10:00:00Z&to=2026-12-02T09:00:00Z",
		"cursor=not-a-cursor", "cursor=eyJrIjoidHVubmVscyIsInYiOlsiYSIsImIiXX0", "limit=0", "color=blue",
	} {
		e.must(400, "GET", base+"/access?org=acme&"+q, root, nil).problem(t)
	}
	e.must(404, "GET", "/api/v1/tunnels/"+other+"/access?org=acme&wait_for=latest", root, nil).problem(t)
	e.must(404, "GET", "/api/v1/tunnels/not-an-id/access?org=acme", root, nil).problem(t)
}

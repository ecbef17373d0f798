package api_test

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/internal/logbuf"
)

// Every node asks for the log's size every few seconds: at info level those requests leave no
// access-log line, other requests do, and a refused one still does.
func TestNodePollsAreLoggedAtDebugOnly(t *testing.T) {
	t.Parallel()
	var logs logbuf.Buffer
	e := newEnv(t, func(c *api.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	tok := e.token("somebody-without-roles")
	for range 3 {
		e.must(http.StatusOK, http.MethodGet, "/api/v1/log", tok, nil)
	}
	e.call(http.MethodGet, "/api/v1/log?bogus=1", "", nil) // 400
	e.must(http.StatusOK, http.MethodGet, "/api/v1/orgs", tok, nil)
	out := logs.String()
	if n := strings.Count(out, "route=/api/v1/log "); n != 1 || !strings.Contains(out, "route=/api/v1/log path=/api/v1/log status=400") {
		t.Errorf("%d access-log lines for /api/v1/log at info level, want only the refused one:\n%s", n, out)
	}
	if !strings.Contains(out, "route=/api/v1/orgs ") {
		t.Errorf("no access-log line for /api/v1/orgs:\n%s", out)
	}
}

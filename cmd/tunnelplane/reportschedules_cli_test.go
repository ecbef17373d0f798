package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/poll"
	"github.com/tunnelplane/tunnelplane/report/scheduler"
)

// admin report-schedules: create, show, update, pause, resume from the CLI; the run a scheduler
// makes (its clock two hours on) is listed and downloads as the file its record hashes; delete.
func TestAdminReportSchedulesCommands(t *testing.T) {
	t.Parallel()
	env := startAdminEnv(t)
	as := func(args ...string) result { return env.must(t, args...) }
	as("admin", "orgs", "create", "acme", "--owner", "alice")
	if r := env.run(t, "admin", "report-schedules", "create", "pci", "--org", "acme"); r.code == 0 || !strings.Contains(r.stderr, "kind") {
		t.Fatalf("an unknown kind: %d %s", r.code, r.stderr)
	}
	created := as("admin", "report-schedules", "create", "soc2", "--org", "acme", "--every", "interval", "--interval-hours", "1", "--format", "json")
	id := strings.Fields(created.stdout)[3]
	show := as("admin", "report-schedules", "show", id)
	if !strings.Contains(show.stdout, "every 1h UTC") || !strings.Contains(show.stdout, "active") {
		t.Fatalf("show:\n%s", show.stdout)
	}
	as("admin", "report-schedules", "update", id, "--format", "csv")
	as("admin", "report-schedules", "pause", id)
	if list := as("admin", "report-schedules", "list", "--org", "acme"); !strings.Contains(list.stdout, "paused") || !strings.Contains(list.stdout, "csv") {
		t.Fatalf("list:\n%s", list.stdout)
	}
	as("admin", "report-schedules", "resume", id)

	cp := env.cp
	gen, err := controlapp.NewReportGenerator(cp.Log)
	if err != nil {
		t.Fatal(err)
	}
	m, err := scheduler.New(scheduler.Config{Log: cp.Log.Store, Pool: cp.Log.Pool, Kinds: controlapp.ReportKinds(cp.Log.Store, cp.Runner, gen, controlapp.NewAnalyticsReportGenerator(cp.Log, 0)),
		Now: func() time.Time { return time.Now().Add(2 * time.Hour) }, Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	var listed api.List[api.StoredReport]
	poll.Until(t, 30*time.Second, "a scheduled report listed", func() bool {
		r := as("admin", "report-schedules", "reports", "--org", "acme", "--schedule", id, "--json")
		return json.Unmarshal([]byte(r.stdout), &listed) == nil && len(listed.Items) > 0
	})
	reports := listed.Items
	file := filepath.Join(t.TempDir(), "report.csv")
	as("admin", "report-schedules", "download", reports[0].ID, "--out", file)
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	if hex.EncodeToString(sum[:]) != reports[0].SHA256 || reports[0].Format != "csv" {
		t.Fatalf("downloaded %x, listed %+v", sum, reports[0])
	}
	as("admin", "report-schedules", "delete", id)
	if list := as("admin", "report-schedules", "list", "--org", "acme"); strings.Contains(list.stdout, id) {
		t.Fatalf("listed after delete:\n%s", list.stdout)
	}
}

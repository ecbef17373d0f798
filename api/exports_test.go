package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/compliance/evidence"
	"github.com/tunnelplane/tunnelplane/compliance/exportjobs"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// export asks for an export and polls it until it finished.
func (e *env) export(tok string, body any) exportjobs.Job {
	e.t.Helper()
	r := e.must(http.StatusAccepted, http.MethodPost, "/api/v1/exports", tok, body)
	var j exportjobs.Job
	r.decode(e.t, &j)
	if loc := r.header.Get("Location"); loc != "/api/v1/exports/"+j.ID || j.State != exportjobs.StateQueued && j.State != exportjobs.StateRunning {
		e.t.Fatalf("accepted: Location %q, %+v", loc, j)
	}
	poll.Until(e.t, 20*time.Second, "the export finished", func() bool {
		e.must(http.StatusOK, http.MethodGet, "/api/v1/exports/"+j.ID, tok, nil).decode(e.t, &j)
		return j.State == exportjobs.StateDone || j.State == exportjobs.StateFailed
	})
	return j
}

// download fetches a bundle and checks its length and digest headers against the export.
func (e *env) download(tok string, j exportjobs.Job) []byte {
	e.t.Helper()
	r := e.must(http.StatusOK, http.MethodGet, "/api/v1/exports/"+j.ID+"/bundle", tok, nil)
	sum := sha256.Sum256(r.body)
	if ct := r.header.Get("Content-Type"); ct != "application/zstd" {
		e.t.Errorf("Content-Type %q", ct)
	}
	if cl := r.header.Get("Content-Length"); cl != strconv.Itoa(len(r.body)) || int64(len(r.body)) != j.Bytes {
		e.t.Errorf("Content-Length %q, %d bytes, the export says %d", cl, len(r.body), j.Bytes)
	}
	if hex.EncodeToString(sum[:]) != j.BundleSHA256 || r.header.Get("X-Bundle-SHA256") != j.BundleSHA256 ||
		r.header.Get("Repr-Digest") != "sha-256=:"+base64.StdEncoding.EncodeToString(sum[:])+":" {
		e.t.Errorf("digest: body %x, export %s, headers %q %q", sum, j.BundleSHA256, r.header.Get("X-Bundle-SHA256"), r.header.Get("Repr-Digest"))
	}
	return r.body
}

// verified checks a downloaded bundle as verify-export does.
func verified(t *testing.T, bundle []byte) evidence.Report {
	t.Helper()
	rep, err := evidence.Verify(bytes.NewReader(bundle), evidence.VerifyOptions{})
	if err != nil || !rep.OK() {
		t.Fatalf("verify-export: %v %+v", err, rep.Problems)
	}
	return rep
}

// POST /exports → poll → download → the bundle verifies offline, its hash is the one
// export.created recorded, and that record names who asked. An organization's admin exports
// its organization, and neither the whole log nor another organization's bundle.
func TestExportThroughTheAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	acme := e.createOrg(root, "acme", "alice")
	e.createOrg(root, "globex", "gina")
	e.grant(acme, "bob", domain.RoleAdmin)
	e.write(http.StatusCreated, http.MethodPost, "/api/v1/tunnels?org=acme", e.token("alice"), map[string]string{"name": "llm", "upstream": "http://127.0.0.1:11434"})
	to := head(t, e.store) - 1

	j := e.export(root, map[string]any{"from": 0, "to": to})
	if j.State != exportjobs.StateDone || j.RequestedBy != "root" || j.RecordsTotal == 0 || j.RecordsDone != j.RecordsTotal || *j.FirstPosition != 0 || *j.LastPosition != to {
		t.Fatalf("done: %+v", j)
	}
	rep := verified(t, e.download(root, j))
	if rep.Manifest == nil || rep.Manifest.ExportID != j.ID || rep.Manifest.Records != to+1 {
		t.Fatalf("manifest %+v", rep.Manifest)
	}
	recs, err := e.store.ReadStream(context.Background(), domain.ExportStream(j.ID), 1, 10)
	if err != nil || len(recs) != 1 || uint64(recs[0].Position) != *j.Position {
		t.Fatalf("export.created: %v %+v", err, recs)
	}
	var created domain.ExportCreated
	var meta domain.Metadata
	if err := json.Unmarshal(recs[0].Payload, &created); err != nil || created.BundleSHA256 != j.BundleSHA256 {
		t.Fatalf("export.created %s, want the bundle's hash %s", recs[0].Payload, j.BundleSHA256)
	}
	if err := json.Unmarshal(recs[0].Metadata, &meta); err != nil || meta.Actor != "root" || meta.RequestID == "" {
		t.Fatalf("export.created metadata %s does not say who asked", recs[0].Metadata)
	}

	// An organization's admin: its own organization's bundle, by time; not the whole log, not
	// another organization's bundle, not the whole log's.
	bob := e.token("bob")
	e.must(http.StatusForbidden, http.MethodPost, "/api/v1/exports", bob, map[string]any{"from": 0, "to": to})
	e.must(http.StatusForbidden, http.MethodPost, "/api/v1/exports", bob, map[string]any{"from": 0, "to": to, "org": "globex"})
	e.must(http.StatusForbidden, http.MethodGet, "/api/v1/exports/"+j.ID, bob, nil)
	e.must(http.StatusForbidden, http.MethodGet, "/api/v1/exports/"+j.ID+"/bundle", bob, nil)
	since := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	until := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	mine := e.export(bob, map[string]any{"from": since, "to": until, "org": "acme"})
	if mine.State != exportjobs.StateDone || mine.OrgID != acme || mine.RequestedBy != "bob" {
		t.Fatalf("acme's export: %+v", mine)
	}
	if rep := verified(t, e.download(bob, mine)); rep.Manifest.OrgID != acme || len(rep.Manifest.Withheld) == 0 {
		t.Fatalf("acme's manifest %+v", rep.Manifest)
	}
	theirs := e.export(e.token("gina"), map[string]any{"from": 0, "to": to, "org": "globex"})
	e.must(http.StatusForbidden, http.MethodGet, "/api/v1/exports/"+theirs.ID+"/bundle", bob, nil)
	var l struct{ Items []exportjobs.Job }
	e.must(http.StatusOK, http.MethodGet, "/api/v1/exports?org=acme", bob, nil).decode(t, &l)
	if len(l.Items) != 1 || l.Items[0].ID != mine.ID {
		t.Fatalf("acme's exports: %+v", l.Items)
	}
	e.must(http.StatusOK, http.MethodGet, "/api/v1/exports?org=*", root, nil).decode(t, &l)
	if len(l.Items) != 3 {
		t.Fatalf("all exports: %d", len(l.Items))
	}
	e.must(http.StatusForbidden, http.MethodGet, "/api/v1/exports?org=*", bob, nil)
}

// A window that is not in the log is a 422 problem at once; one that the log cannot fill fails
// in its status, saying why, and leaves nothing to download.
func TestExportBadWindows(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	last := head(t, e.store) - 1
	for _, body := range []string{
		`{"from": 5, "to": 1}`,
		`{"from": 0, "to": ` + strconv.FormatUint(last+1000, 10) + `}`,
		`{"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}`,
		`{"from": 0, "to": "2026-01-01T00:00:00Z"}`,
		`{"from": "yesterday", "to": 3}`,
		`{"to": 3}`,
		`{"from": -1, "to": 3}`,
	} {
		r := e.call(http.MethodPost, "/api/v1/exports", root, body)
		if r.status < 400 || r.status >= 500 {
			t.Errorf("%s: status %d, want a 4xx problem: %s", body, r.status, r.body)
			continue
		}
		r.problem(t)
	}
	j := e.export(root, map[string]any{"from": "2100-01-01T00:00:00Z", "to": "2100-01-02T00:00:00Z"})
	if j.State != exportjobs.StateFailed || !strings.Contains(j.Error, "nothing was recorded") || j.BundleSHA256 != "" {
		t.Fatalf("an empty window: %+v", j)
	}
	r := e.must(http.StatusConflict, http.MethodGet, "/api/v1/exports/"+j.ID+"/bundle", root, nil)
	if p := r.problem(t); !strings.Contains(p.Detail, "failed") {
		t.Fatalf("problem %+v", p)
	}
	e.must(http.StatusNotFound, http.MethodGet, "/api/v1/exports/0193c8a0-0000-7000-8000-000000000001", root, nil)
}

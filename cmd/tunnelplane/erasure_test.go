package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/compliance/evidence"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
)

// The personal data of an erased subject survives nowhere: a user acts through the API from a
// distinctive address with a distinctive user agent, and fails to log in from there; the log holds
// only sealed values, the audit search and the report show the plaintext; the user (and the
// anonymous failed logins) are erased; verify still passes; the audit search, the report and
// the export show [erased] or nothing readable; and a dump of the whole database holds neither
// value, as text or as bytes.
func TestErasureLeavesNoPlaintext(t *testing.T) {
	t.Parallel()
	pgDump := findPGDump(t)
	e := startAdminEnv(t)
	u, db := e.url, e.db
	var org struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(e.must(t, "admin", "orgs", "create", "acme", "--json").stdout), &org); err != nil || org.ID == "" {
		t.Fatalf("org: %v", err)
	}
	orgID := org.ID
	erinTok := tp(t, append([]string{"admin", "token", "create", "--user", "erin", "--role", "owner", "--org", orgID}, db...)...)
	if erinTok.code != 0 {
		t.Fatalf("token create: %d %s", erinTok.code, erinTok.stderr)
	}
	erin := lastLine(erinTok.stdout)

	const ip, ua = "127.42.13.77", "shred-test-agent/7.3 (erin's laptop)"
	client := clientFrom(t, ip)
	call := func(method, path, bearer string, body any) (int, []byte) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, e.cp.URL+path, rd)
		req.Header.Set("User-Agent", ua)
		req.Header.Set("Authorization", "Bearer "+bearer)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, b := call("POST", "/api/v1/tunnels?org="+orgID, erin, map[string]string{"name": "erins-tunnel", "upstream": "http://127.0.0.1:1"}); code != 201 {
		t.Fatalf("erin creates a tunnel: %d %s", code, b)
	}
	for range 6 { // a burst the report names (auth_failures.threshold is 5)
		if code, _ := call("GET", "/api/v1/tunnels?org="+orgID, "not-a-token", nil); code != 401 {
			t.Fatalf("a bad token: %d, want 401", code)
		}
	}
	e.cp.Service.Auditor.Flush(context.Background())

	// The log holds sealed values only.
	super := pgtest.SuperPool(t, u)
	var sealed int
	rows, err := super.Query(context.Background(), `SELECT payload, metadata, payload_json::text, metadata_json::text FROM events`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var p, m []byte
		var pj, mj string
		if err := rows.Scan(&p, &m, &pj, &mj); err != nil {
			t.Fatal(err)
		}
		all := string(p) + string(m) + pj + mj
		if strings.Contains(all, ip) || strings.Contains(all, "shred-test-agent") {
			t.Fatalf("a record holds the plaintext: %s %s", p, m)
		}
		sealed += strings.Count(string(m)+string(p), `"enc:v1:`)
	}
	if rows.Err() != nil || sealed < 4 {
		t.Fatalf("%d sealed values in the log (%v), want the tunnel's and the failed logins' address and agent", sealed, rows.Err())
	}

	// The audit search and the report show the plaintext while the keys exist.
	entries := auditOf(t, e, "erin")
	if len(entries) == 0 || deref(entries[0].ClientIP) != ip || deref(entries[0].UserAgent) != ua {
		t.Fatalf("audit search before erasure: %+v", entries)
	}
	report := reportCSV(t, e)
	if !strings.Contains(report, "from "+ip) {
		t.Fatalf("the report does not name the failed logins' address:\n%s", report)
	}
	before := exportFiles(t, db)
	if p := string(before[evidence.FilePersonal]); !strings.Contains(p, ip) || !strings.Contains(p, "shred-test-agent") {
		t.Fatalf("the export's %s before erasure:\n%s", evidence.FilePersonal, p)
	}
	if bytes.Contains(before[evidence.FileRecords], []byte(ip)) {
		t.Fatal("the export's records hold the plaintext")
	}

	// Erase erin (CLI) and the anonymous failed logins (API).
	if r := e.run(t, "admin", "subjects", "erase", "erin", "--reason", "GDPR art. 17"); r.code != 0 || !strings.Contains(r.stdout, "erased subject") {
		t.Fatalf("admin subjects erase: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := e.must(t, "admin", "audit", "search", "--org", "*", "--type", "subject.erased", "--json"); !strings.Contains(r.stdout, "subject.erased") {
		t.Fatalf("no subject.erased in the audit search: %s", r.stdout)
	}
	if code, b := call("POST", "/api/v1/subjects/erin/erase", erin, nil); code != 403 {
		t.Fatalf("an owner erases a subject: %d %s, want 403 (superadmins only)", code, b)
	}
	req, _ := http.NewRequest("POST", e.cp.URL+"/api/v1/subjects/anonymous/erase", strings.NewReader(`{"reason":"failed logins"}`))
	req.Header.Set("Authorization", "Bearer "+e.root)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("erase anonymous: %d", resp.StatusCode)
	}

	if r := tp(t, append([]string{"verify"}, db...)...); r.code != 0 {
		t.Fatalf("verify after erasure: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, a := range auditOf(t, e, "erin") {
		if a.ClientIP != nil && *a.ClientIP != "[erased]" || a.UserAgent != nil && *a.UserAgent != "[erased]" {
			t.Fatalf("audit search after erasure: %s %v %v", a.Type, deref(a.ClientIP), deref(a.UserAgent))
		}
	}
	if report := reportCSV(t, e); strings.Contains(report, ip) || !strings.Contains(report, "from [erased]") {
		t.Fatalf("the report after erasure:\n%s", report)
	}
	files := exportFiles(t, db)
	for name, b := range files {
		if bytes.Contains(b, []byte(ip)) || bytes.Contains(b, []byte("shred-test-agent")) {
			t.Fatalf("the bundle's %s holds the plaintext", name)
		}
	}
	var opened []evidence.PersonalValue
	if err := json.Unmarshal(files[evidence.FilePersonal], &opened); err != nil || len(opened) < 4 {
		t.Fatalf("the export's %s after erasure: %v\n%s", evidence.FilePersonal, err, files[evidence.FilePersonal])
	}
	erased := 0
	for _, v := range opened {
		if v.Value == "[erased]" {
			erased++
		}
	}
	if erased < 4 {
		t.Fatalf("%d values of the export read [erased]:\n%s", erased, files[evidence.FilePersonal])
	}

	// Nothing in the database holds either value: not as text, not as bytes (bytea is dumped
	// in hex).
	e.cp.Close()
	out, err := exec.Command(pgDump, "--dbname="+u, "--no-owner").Output()
	if err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	if len(out) < 10_000 || !bytes.Contains(out, []byte("subject_keys")) {
		t.Fatalf("the dump is too small to mean anything (%d bytes)", len(out))
	}
	for _, s := range []string{ip, "shred-test-agent", hex.EncodeToString([]byte(ip)), hex.EncodeToString([]byte("shred-test-agent"))} {
		if bytes.Contains(out, []byte(s)) {
			t.Fatalf("the database dump holds %q", s)
		}
	}
	_ = controlapp.SubjectKEK // the KEK stays in the data dir, outside the dump
}

// exportFiles exports the whole log with the CLI, checks the bundle with verify-export, and
// returns its files.
func exportFiles(t *testing.T, db []string) map[string][]byte {
	t.Helper()
	bundle := filepath.Join(t.TempDir(), "bundle.tar.zst")
	if r := tp(t, append([]string{"export", "--from", "1", "--to", time.Now().Add(time.Minute).UTC().Format(time.RFC3339), "--out", bundle}, db...)...); r.code != 0 {
		t.Fatalf("export: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := tp(t, "verify-export", bundle, "--database-url", "postgres://nobody@127.0.0.1:1/none", "--data-dir", t.TempDir()); r.code != 0 {
		t.Fatalf("verify-export: %d %s %s", r.code, r.stdout, r.stderr)
	}
	f, err := os.Open(bundle)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files, err := evidence.ReadBundle(f)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// clientFrom is an HTTP client whose connections come from the loopback address ip.
func clientFrom(t *testing.T, ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func auditOf(t *testing.T, e *adminEnv, actor string) []api.AuditEntry {
	t.Helper()
	r := e.must(t, "admin", "audit", "search", "--org", "*", "--actor", actor, "--json")
	var out api.List[api.AuditEntry]
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("admin audit --json: %v\n%s", err, r.stdout)
	}
	return out.Items
}

func reportCSV(t *testing.T, e *adminEnv) string {
	t.Helper()
	day := time.Now().UTC()
	path := fmt.Sprintf("/api/v1/reports/soc2?org=*&from=%s&to=%s&format=csv", day.Format(time.DateOnly), day.AddDate(0, 0, 1).Format(time.DateOnly))
	req, _ := http.NewRequest("GET", e.cp.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+e.root)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("report: %d %s", resp.StatusCode, b)
	}
	return string(b)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func findPGDump(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("pg_dump"); err == nil {
		return p
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_dump")
	if len(matches) == 0 {
		t.Fatal("pg_dump is not installed (it comes with PostgreSQL)")
	}
	return matches[len(matches)-1]
}

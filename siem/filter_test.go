package siem_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/siem"
)

// With redaction, no client address leaves in any format, the same address hashes alike under
// one key and differently under another, OCSF stays valid, and the raw format (signed bytes)
// refuses.
func TestRedactionHidesClientAddresses(t *testing.T) {
	t.Parallel()
	s := ocsf(t)
	k1, err := siem.NewRedactor([]byte("sink-one-key-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := siem.NewRedactor([]byte("sink-two-key-0123456789"))
	if _, err := siem.NewRedactor([]byte("short")); err == nil {
		t.Error("a 5-byte redaction key was accepted")
	}
	addresses := regexp.MustCompile(`198\.51\.100\.9|192\.0\.2\.7|2001:db8::1`)
	hashes := map[string]bool{}
	for typ, ev := range samples() {
		rec := record(t, 3, ev, domain.Metadata{Actor: "alice", ClientIP: "198.51.100.9"})
		e := siem.Entry{Record: rec, Seq: 1, Redact: k1}
		out, err := siem.OCSF(e, siem.DefaultProduct("1"))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(out); err != nil {
			t.Errorf("%s redacted: not valid OCSF: %v\n%s", typ, err, out)
		}
		line, err := siem.CEF(e, siem.DefaultProduct("1"))
		if err != nil {
			t.Fatal(err)
		}
		for _, msg := range []string{string(out), line} {
			if a := addresses.FindString(msg); a != "" {
				t.Errorf("%s: %s leaks %s:\n%s", typ, map[bool]string{true: "OCSF", false: "CEF"}[msg == string(out)], a, msg)
			}
		}
		for _, h := range regexp.MustCompile(`ip-[0-9a-f]{32}`).FindAllString(line, -1) {
			hashes[h] = true
		}
		other, _ := siem.CEF(siem.Entry{Record: rec, Seq: 1, Redact: k2}, siem.DefaultProduct("1"))
		for h := range hashes {
			if strings.Contains(other, h) {
				t.Errorf("%s: the hash %s is the same under another sink's key", typ, h)
			}
		}
		if _, err := siem.Raw(e); !errors.Is(err, siem.ErrRawNotRedactable) {
			t.Errorf("raw with redaction: %v", err)
		}
	}
	if len(hashes) != 1 {
		t.Errorf("one client address hashed to %d values under one key: %v", len(hashes), hashes)
	}
}

// A filter keeps the types, org and severity it names; an org-scoped sink never sees platform
// events; a mistyped event type is refused.
func TestSinkFilterChoosesRecords(t *testing.T) {
	t.Parallel()
	all := samples()
	org := all[domain.TypeTunnelCreated].(domain.TunnelCreated).OrgID
	match := func(f siem.SinkFilter, typ string, md domain.Metadata) bool {
		return f.Match(record(t, 1, all[typ], md))
	}
	for name, tc := range map[string]struct {
		f    siem.SinkFilter
		typ  string
		md   domain.Metadata
		want bool
	}{
		"no filter":                    {siem.SinkFilter{}, domain.TypeNodeLost, domain.Metadata{}, true},
		"an exact type":                {siem.SinkFilter{Types: []string{domain.TypeAuthFailed}}, domain.TypeAuthFailed, domain.Metadata{}, true},
		"another type":                 {siem.SinkFilter{Types: []string{domain.TypeAuthFailed}}, domain.TypeTunnelCreated, domain.Metadata{}, false},
		"a prefix":                     {siem.SinkFilter{Types: []string{"audit."}}, domain.TypeAccessDenied, domain.Metadata{}, true},
		"the org's event":              {siem.SinkFilter{OrgID: org}, domain.TypeTunnelCreated, domain.Metadata{}, true},
		"the org in the metadata":      {siem.SinkFilter{OrgID: "org-x"}, domain.TypeAuthFailed, domain.Metadata{OrgID: "org-x"}, true},
		"another org's event":          {siem.SinkFilter{OrgID: "org-x"}, domain.TypeTunnelCreated, domain.Metadata{}, false},
		"a platform event, org sink":   {siem.SinkFilter{OrgID: org}, domain.TypeNodeLost, domain.Metadata{}, false},
		"the key history, org sink":    {siem.SinkFilter{OrgID: org}, eventstore.TypeKeyRotated, domain.Metadata{}, false},
		"severity at the minimum":      {siem.SinkFilter{MinSeverity: 3}, domain.TypeAuthFailed, domain.Metadata{}, true},
		"severity under the minimum":   {siem.SinkFilter{MinSeverity: 3}, domain.TypeTunnelCreated, domain.Metadata{}, false},
		"a failed command raises it":   {siem.SinkFilter{MinSeverity: 2}, domain.TypeNodeCommandExecuted, domain.Metadata{}, true},
		"an informational event, low+": {siem.SinkFilter{MinSeverity: 2}, domain.TypeNodeStarted, domain.Metadata{}, false},
	} {
		if got := match(tc.f, tc.typ, tc.md); got != tc.want {
			t.Errorf("%s: match %v, want %v", name, got, tc.want)
		}
	}
	err := siem.SinkFilter{Types: []string{"audit.auth_faild", "audit."}, MinSeverity: 9}.Validate()
	if err == nil || !strings.Contains(err.Error(), "auth_faild") || !strings.Contains(err.Error(), "severity") || strings.Contains(err.Error(), `"audit."`) {
		t.Fatalf("%v", err)
	}
}

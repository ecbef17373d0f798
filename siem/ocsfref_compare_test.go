package siem_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/siem"
)

// referenceMetadata are metadata that take every branch of the OCSF builder: none, all of it,
// each kind of actor, each kind of caller address, and strings that need escaping.
func referenceMetadata() []domain.Metadata {
	at := time.Date(2026, 12, 2, 5, 59, 59, 123456789, time.UTC)
	return []domain.Metadata{
		{},
		{Actor: "alice", OrgID: "org-1", CorrelationID: uuid.NewString(), CausationID: uuid.NewString(), RequestID: "r-1", ClientIP: "198.51.100.9", UserAgent: "cli"},
		{Actor: "node:" + uuid.NewString(), ClientIP: "[2001:db8::1]:443", OccurredAt: at},
		{Actor: "node:", ClientIP: "::ffff:192.0.2.1"},
		{Actor: "system:audit", ClientIP: "host.example:8080"},
		{Actor: "system:", ClientIP: "fe80::1%eth0"},
		{ClientIP: ":0"},
		{ClientIP: "192.0.2.1:99999"},
		{Actor: "<b>\"é\u2028\u2029\x01\x7f&\\</b>", CorrelationID: "a&b\t\n\r\b\f", RequestID: "\u00a0 ✓", CausationID: "<", OrgID: ">"},
	}
}

// The typed OCSF encoder writes exactly the bytes the map-based builder it replaced wrote, for
// every event type, with and without redaction, with payloads that are not compact or hold
// characters encoding/json escapes.
func TestOCSFIsTheMapBuiltReference(t *testing.T) {
	t.Parallel()
	redact, err := siem.NewRedactor([]byte("0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	p := siem.Product{Name: "tunnel<plane>", Vendor: "t&p", Version: "1.2.3\u2028"}
	n, compared := 0, map[string]bool{}
	for typ, ev := range samples() {
		for _, md := range referenceMetadata() {
			rec := record(t, 42, ev, md)
			var indented bytes.Buffer
			if err := json.Indent(&indented, rec.Payload, "", "  "); err != nil {
				t.Fatal(err)
			}
			for _, payload := range [][]byte{rec.Payload, indented.Bytes()} {
				rec.Payload = payload
				for _, r := range []*siem.Redactor{nil, redact} {
					e := siem.Entry{Record: rec, Seq: 7, Redact: r}
					got, err := siem.OCSF(e, p)
					if err != nil {
						t.Fatalf("%s: %v", typ, err)
					}
					want, err := siem.OCSFByMaps(e, p)
					if errors.Is(err, siem.ErrUnmapped) {
						t.Fatalf("%s has no row in the reference (siem/ocsfref_test.go): every type the typed map holds must have one", typ)
					}
					if err != nil {
						t.Fatalf("%s: %v", typ, err)
					}
					if !bytes.Equal(got, want) {
						t.Errorf("%s (metadata %+v, redacted %v):\n got %s\nwant %s", typ, md, r != nil, got, want)
					}
					n++
					compared[typ] = true
				}
			}
		}
	}
	// The 31 types of the map builder (the log's four and the domain's of then).
	if len(compared) < 31 || n < len(compared)*len(referenceMetadata())*4 {
		t.Fatalf("compared %d events of %d types", n, len(compared))
	}
}

// Hostile strings in the fields the encoder escapes itself come out as the reference writes them.
func FuzzOCSFIsTheMapBuiltReference(f *testing.F) {
	f.Add("token expired", "bob", "192.0.2.7:51234", "alice", "198.51.100.9", "llm")
	f.Add("<script>&", "", "[::1]:0", "node:x", "h.example:1", "a\u2028b")
	f.Add("\x00\x1f\"\\", "é", "ip-abc", "system:", "", "\xff\xfe")
	f.Fuzz(func(t *testing.T, reason, subject, remote, actor, clientIP, name string) {
		md := domain.Metadata{Actor: actor, ClientIP: clientIP, CorrelationID: name, RequestID: reason}
		for _, ev := range []any{
			domain.AuthFailed{Reason: reason, Subject: subject, RemoteAddr: remote, Count: 1},
			domain.TunnelCreated{TunnelID: subject, OrgID: actor, Name: name},
			domain.AgentConnected{NodeID: name, SessionID: subject, RemoteAddr: remote},
			domain.AccessDenied{ActorID: subject, Action: reason, Resource: name, OrgID: clientIP},
		} {
			e := siem.Entry{Record: record(t, 1, ev, md), Seq: 1}
			got, gerr := siem.OCSF(e, siem.DefaultProduct(name))
			want, werr := siem.OCSFByMaps(e, siem.DefaultProduct(name))
			if (gerr == nil) != (werr == nil) || !bytes.Equal(got, want) {
				t.Fatalf("got %s (%v)\nwant %s (%v)", got, gerr, want, werr)
			}
		}
	})
}

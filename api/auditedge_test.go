package api_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
)

// What a caller sends in headers and token claims is cut at the edge before it enters an actor or
// an audit event: a 17,000-byte User-Agent neither fails a legitimate command (its metadata
// carries the user agent) nor, sent anonymously, stops the audit log; a claimed subject with a
// NUL (which jsonb cannot store) does not either. A later denial is searchable after the flush.
func TestHostileHeadersAreBoundedAtTheEdge(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	huge := strings.Repeat("U", 17_000)

	// A legitimate command with a huge User-Agent succeeds.
	org := e.write(201, "POST", "/api/v1/orgs", root, map[string]string{"name": "acme", "owner": "alice"}, "User-Agent", huge)

	// Anonymous and forged requests are refused and audited.
	e.must(401, "GET", "/api/v1/orgs", "", nil, "User-Agent", huge)
	enc := base64.RawURLEncoding.EncodeToString
	forged := enc([]byte(`{"alg":"EdDSA","typ":"JWT","kid":"nope"}`)) + "." + enc([]byte(`{"sub":"mallory\u0000","exp":4102444800}`)) + "." + enc([]byte("sig"))
	e.must(401, "GET", "/api/v1/orgs", forged, nil, "User-Agent", "x")

	// Then a user without a role is denied the node list; the denial reaches the audit index.
	e.must(403, "GET", "/api/v1/nodes", e.token("nobody"), nil)
	e.svc.Auditor.Flush(context.Background())

	var denied api.List[api.AuditEntry]
	e.must(200, "GET", "/api/v1/audit?org=*&type=audit.access_denied&actor=nobody&wait_for=latest", root, nil).decode(t, &denied)
	if len(denied.Items) != 1 {
		t.Fatalf("%d access_denied entries for nobody, want 1 (the audit log stopped taking events)", len(denied.Items))
	}
	var all api.List[api.AuditEntry]
	e.must(200, "GET", "/api/v1/audit?org=*&limit=500", root, nil).decode(t, &all)
	var created, failed int
	for _, a := range all.Items {
		if a.UserAgent != nil && (len(*a.UserAgent) > 512 || !utf8.ValidString(*a.UserAgent)) {
			t.Fatalf("%s at %d holds a user agent of %d bytes", a.Type, a.Position, len(*a.UserAgent))
		}
		switch a.Type {
		case "organization.created":
			if a.OrgID != nil && *a.OrgID == org.ID {
				created++
				if a.UserAgent == nil || !strings.HasPrefix(*a.UserAgent, "UUUU") || !strings.Contains(*a.UserAgent, "sha256:") {
					t.Fatalf("the command's user agent is not kept cut with a hash: %v", a.UserAgent)
				}
			}
		case "audit.auth_failed":
			failed++
		}
	}
	if created != 1 || failed != 2 {
		t.Fatalf("%d organization.created entries of acme (want 1), %d auth_failed (want 2)", created, failed)
	}

	// More distinct subjects than a window holds: the rest is counted in audit.overflowed, which
	// the audit search finds like the other audit events.
	for i := range commands.AuditMaxKeys + 1 {
		e.svc.Auditor.AuthFailed("invalid_token", fmt.Sprintf("flood-%d", i), "203.0.113.9", "junk")
	}
	e.svc.Auditor.Flush(context.Background())
	var over api.List[api.AuditEntry]
	e.must(200, "GET", "/api/v1/audit?org=*&type="+domain.TypeAuditOverflowed+"&wait_for=latest", root, nil).decode(t, &over)
	if len(over.Items) != 1 || over.Items[0].Actor == nil || *over.Items[0].Actor != "system:auditor" || over.Items[0].StreamID != domain.AuditStream {
		t.Fatalf("audit.overflowed in the audit search: %+v", over.Items)
	}
}

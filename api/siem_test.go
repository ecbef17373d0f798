package api_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/domain"
)

const hecToken = "5c2b1f0e-hec-token-never-shown"

// siemSinkBody is a HEC sink's configuration with a token in clear, as a caller sends it.
func siemSinkBody(name string) map[string]any {
	return map[string]any{"name": name, "transport": "https", "url": "https://splunk.example:8088/services/collector/event",
		"profile": "hec", "format": "ocsf", "token": hecToken, "redact_client_ips": true, "types": []string{"audit.", "tunnel.created"}}
}

// A token given in clear is sealed before it enters the log: neither the log, the read model nor
// the API's answers hold it; the API shows "sealed". An update without a token keeps it, and the
// redaction key with it; a skip is recorded; removal hides the sink from the default list.
func TestSIEMSinkSecretsNeverLeaveSealed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	org := e.createOrg(root, "acme", "alice")
	alice := e.token("alice")
	res := e.write(201, "POST", "/api/v1/siem/sinks?org=acme", alice, siemSinkBody("splunk"))

	var k api.SIEMSink
	e.must(200, "GET", "/api/v1/siem/sinks/"+res.ID+"?org=acme&wait_for="+itoa(res.Position), alice, nil).decode(t, &k)
	if k.Token != "sealed" || !k.RedactClientIPs || k.OrgID != org || k.Platform || k.Name != "splunk" || k.Status.LagEvents < 1 {
		t.Fatalf("sink: %+v", k)
	}
	recs, err := e.store.ReadAll(context.Background(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if strings.Contains(string(r.Payload), hecToken) || strings.Contains(string(r.Metadata), hecToken) {
			t.Fatalf("the log holds the token in clear: %s %s", r.Type, r.Payload)
		}
	}
	if r := e.must(200, "GET", "/api/v1/siem/sinks?org=acme", alice, nil); strings.Contains(string(r.body), hecToken) || strings.Contains(string(r.body), domain.SealedPrefix) {
		t.Fatalf("the list shows a secret: %s", r.body)
	}

	// A PUT without the token keeps it (and the redaction key); with redaction off, the key goes.
	body := siemSinkBody("splunk-2")
	delete(body, "token")
	up := e.write(200, "PUT", "/api/v1/siem/sinks/"+res.ID+"?org=acme", alice, body)
	e.must(200, "GET", "/api/v1/siem/sinks/"+res.ID+"?org=acme&wait_for="+itoa(up.Position), alice, nil).decode(t, &k)
	if k.Token != "sealed" || !k.RedactClientIPs || k.Name != "splunk-2" {
		t.Fatalf("after an update without secrets: %+v", k)
	}
	body["redact_client_ips"] = false
	up = e.write(200, "PUT", "/api/v1/siem/sinks/"+res.ID+"?org=acme", alice, body)
	e.must(200, "GET", "/api/v1/siem/sinks/"+res.ID+"?org=acme&wait_for="+itoa(up.Position), alice, nil).decode(t, &k)
	if k.RedactClientIPs {
		t.Fatalf("redaction still on: %+v", k)
	}

	// An org sink may not name the control plane's files; a platform sink may, and shows it.
	ref := siemSinkBody("ref")
	delete(ref, "token")
	ref["token_ref"] = "file:/etc/shadow"
	if p := e.must(422, "POST", "/api/v1/siem/sinks?org=acme", alice, ref).problem(t); !strings.Contains(fmtErrors(p), "token") {
		t.Fatalf("org sink with a file reference: %+v", p)
	}
	ref["token_ref"] = "env:HEC_TOKEN"
	pr := e.write(201, "POST", "/api/v1/siem/sinks?org=*", root, ref)
	e.must(200, "GET", "/api/v1/siem/sinks/"+pr.ID+"?org=*&wait_for="+itoa(pr.Position), root, nil).decode(t, &k)
	if k.Token != "env:HEC_TOKEN" || !k.Platform {
		t.Fatalf("platform sink with a reference: %+v", k)
	}
	both := siemSinkBody("both")
	both["token_ref"] = "env:X"
	e.must(422, "POST", "/api/v1/siem/sinks?org=*", root, both)

	// A skip is recorded and shown; a skip without a reason is refused.
	e.must(422, "POST", "/api/v1/siem/sinks/"+res.ID+"/skips?org=acme", alice, map[string]any{"position": 1})
	sk := e.write(201, "POST", "/api/v1/siem/sinks/"+res.ID+"/skips?org=acme", alice, map[string]any{"position": 2, "reason": "HEC refuses it"})
	e.must(200, "GET", "/api/v1/siem/sinks/"+res.ID+"?org=acme&wait_for="+itoa(sk.Position), alice, nil).decode(t, &k)
	if len(k.Skipped) != 1 || k.Skipped[0] != 2 {
		t.Fatalf("skipped: %v", k.Skipped)
	}

	rm := e.write(200, "DELETE", "/api/v1/siem/sinks/"+res.ID+"?org=acme&reason=moved", alice, nil)
	var l api.List[api.SIEMSink]
	e.must(200, "GET", "/api/v1/siem/sinks?org=acme&wait_for="+itoa(rm.Position), alice, nil).decode(t, &l)
	if len(l.Items) != 0 {
		t.Fatalf("a removed sink is listed: %+v", l.Items)
	}
	e.must(200, "GET", "/api/v1/siem/sinks?org=acme&removed=true", alice, nil).decode(t, &l)
	if len(l.Items) != 1 || l.Items[0].RemovedAt == nil {
		t.Fatalf("removed=true: %+v", l.Items)
	}
	e.must(404, "DELETE", "/api/v1/siem/sinks/"+res.ID+"?org=acme", alice, nil)
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

// fmtErrors lists a problem's field errors.
func fmtErrors(p api.Problem) string {
	var b strings.Builder
	for _, f := range p.Errors {
		b.WriteString(f.Field + ": " + f.Message + "; ")
	}
	return b.String()
}

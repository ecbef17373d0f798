package domain_test

import (
	"errors"
	"testing"

	"github.com/tunnelplane/tunnelplane/domain"
)

func TestCheckWebhookURL(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		url          string
		allowPrivate bool
		ok           bool
	}{
		{"https://hooks.example.com/tp", false, true},
		{"https://hooks.example.com:8443/tp?x=1", false, true},
		{"https://93.184.216.34/tp", false, true},
		{"http://hooks.example.com/tp", false, false}, // https only
		{"http://hooks.example.com/tp", true, false},  // even when private ranges are allowed
		{"http://127.0.0.1:8080/tp", false, false},    // loopback: the operator's flag
		{"http://127.0.0.1:8080/tp", true, true},
		{"http://[::1]:8080/tp", true, true},
		{"http://localhost:8080/tp", true, true},
		{"https://localhost/tp", false, false},
		{"https://10.0.0.1/tp", false, false},
		{"https://172.16.5.4/tp", false, false},
		{"https://192.168.1.1/tp", false, false},
		{"https://169.254.169.254/latest/meta-data", false, false}, // cloud metadata
		{"https://100.64.0.1/tp", false, false},                    // carrier-grade NAT
		{"https://0.0.0.0/tp", false, false},
		{"https://[fd00::1]/tp", false, false},
		{"https://[fe80::1]/tp", false, false},
		{"https://[::ffff:10.0.0.1]/tp", false, false}, // v4-mapped
		{"https://[64:ff9b::a00:1]/tp", false, false},  // NAT64 of 10.0.0.1
		{"https://10.0.0.1/tp", true, true},
		{"https://user:pw@hooks.example.com/tp", false, false},
		{"https://hooks.example.com/tp#frag", false, false},
		{"ftp://hooks.example.com/tp", false, false},
		{"hooks.example.com/tp", false, false},
		{"https://exa mple.com/", false, false},
		{"https://" + string(make([]byte, 3000)), false, false},
	} {
		if got := domain.CheckWebhookURL(c.url, c.allowPrivate); (got == "") != c.ok {
			t.Errorf("%q allow private %v: %q, want ok %v", c.url, c.allowPrivate, got, c.ok)
		}
	}
}

func TestWebhookAggregate(t *testing.T) {
	t.Parallel()
	const org, id = "5f0c5d3e-8d7a-4c3b-9a51-2c8e4b1f6a70", "0b6f1e2d-3c4a-4b5c-8d9e-0f1a2b3c4d5e"
	spec := domain.WebhookSpec{Name: "chatops", URL: "https://hooks.example.com/tp", Types: []string{domain.TypeAccessRequested}}
	if _, err := domain.CreateWebhook(domain.NewWebhook{EndpointID: id, OrgID: org, Spec: spec, Secret: "whsec_clear"}); !errors.Is(err, domain.ErrValidation) {
		t.Fatalf("a secret in clear: %v", err)
	}
	for _, types := range [][]string{{"tunnel.nope"}, {domain.TypeAccessRequested, domain.TypeAccessRequested}, {domain.TypeUsageRecorded}} {
		bad := spec
		bad.Types = types
		if _, err := domain.CreateWebhook(domain.NewWebhook{EndpointID: id, OrgID: org, Spec: bad, Secret: domain.SealedPrefix + "x"}); !errors.Is(err, domain.ErrValidation) {
			t.Fatalf("types %v: %v", types, err)
		}
	}
	created, err := domain.CreateWebhook(domain.NewWebhook{EndpointID: id, OrgID: org, Spec: spec, Secret: domain.SealedPrefix + "x"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := domain.RehydrateWebhook(enrollmentStream(t, created))
	if err != nil {
		t.Fatal(err)
	}
	if up, err := w.Update(spec, false); up != nil || err != nil {
		t.Fatalf("the same spec: %v %v, want nothing", up, err)
	}
	spec.Types = append(spec.Types, domain.NotificationForecastExceeded, domain.TypeReportGenerated)
	up, err := w.Update(spec, false)
	if err != nil || up == nil {
		t.Fatalf("update: %v", err)
	}
	rot, err := w.RotateSecret(domain.SealedPrefix + "y")
	if err != nil {
		t.Fatal(err)
	}
	del, err := w.Delete("moved")
	if err != nil {
		t.Fatal(err)
	}
	w, err = domain.RehydrateWebhook(enrollmentStream(t, created, up, rot, del)) // any stream of events
	if err != nil {
		t.Fatal(err)
	}
	if !w.Deleted() || w.Secret() != domain.SealedPrefix+"y" || len(w.Spec().Types) != 3 || w.Version() != 4 {
		t.Fatalf("rehydrated: %+v", w)
	}
	if _, err := w.Delete(""); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

package domain

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"
)

func TestSIEMSinkSpecRules(t *testing.T) {
	org := uuid.NewString()
	syslog := SIEMSinkSpec{Name: "rsyslog", Transport: SIEMTransportSyslog, Address: "siem.example:6514", Format: SIEMFormatCEF}
	hec := SIEMSinkSpec{Name: "splunk", Transport: SIEMTransportHTTPS, URL: "https://splunk.example:8088/services/collector/event", Profile: SIEMProfileHEC,
		Format: SIEMFormatOCSF, Token: SealedPrefix + "x"}
	with := func(s SIEMSinkSpec, f func(*SIEMSinkSpec)) SIEMSinkSpec { f(&s); return s }
	for _, c := range []struct {
		name   string
		org    string
		spec   SIEMSinkSpec
		fields []string // the fields reported; none: valid
	}{
		{"syslog", "", syslog, nil},
		{"hec", org, hec, nil},
		{"json array, raw", org, with(hec, func(s *SIEMSinkSpec) { s.Profile, s.Token, s.Format = SIEMProfileJSON, "", SIEMFormatRaw }), nil},
		{"platform reference", "", with(hec, func(s *SIEMSinkSpec) { s.Token = "file:/etc/tunnelplane/hec-token" }), nil},
		{"org reference", org, with(hec, func(s *SIEMSinkSpec) { s.Token = "file:/etc/shadow" }), []string{"token"}},
		{"clear token", "", with(hec, func(s *SIEMSinkSpec) { s.Token = "abc" }), []string{"token"}},
		{"hec without token", "", with(hec, func(s *SIEMSinkSpec) { s.Token = "" }), []string{"token"}},
		{"http url", "", with(hec, func(s *SIEMSinkSpec) { s.URL = "http://splunk.example/" }), []string{"url"}},
		{"url with credentials", "", with(hec, func(s *SIEMSinkSpec) { s.URL = "https://u:p@splunk.example/" }), []string{"url"}},
		{"cef over https", "", with(hec, func(s *SIEMSinkSpec) { s.Format = SIEMFormatCEF }), []string{"format"}},
		{"no port", "", with(syslog, func(s *SIEMSinkSpec) { s.Address = "siem.example" }), []string{"address"}},
		{"redacted raw", "", with(syslog, func(s *SIEMSinkSpec) { s.Format, s.RedactKey = SIEMFormatRaw, SealedPrefix+"k" }), []string{"redact_key"}},
		{"cert without key", "", with(syslog, func(s *SIEMSinkSpec) { s.ClientCertPEM = "-----BEGIN CERTIFICATE-----\n" }), []string{"client_key"}},
		{"bad type", "", with(syslog, func(s *SIEMSinkSpec) { s.Types = []string{"audit.", "Tunnel Created"} }), []string{"types"}},
		{"severity", "", with(syslog, func(s *SIEMSinkSpec) { s.MinSeverity = 7 }), []string{"min_severity"}},
		{"everything wrong", "", SIEMSinkSpec{Transport: "kafka"}, []string{"name", "transport", "format"}},
	} {
		_, err := ConfigureSIEMSink(NewSIEMSink{SinkID: uuid.NewString(), OrgID: c.org, Spec: c.spec})
		var ve *ValidationError
		if len(c.fields) == 0 {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if !errors.As(err, &ve) {
			t.Errorf("%s: %v, want a validation error", c.name, err)
			continue
		}
		var got []string
		for _, f := range ve.Fields {
			got = append(got, f.Field)
		}
		if strings.Join(got, ",") != strings.Join(c.fields, ",") {
			t.Errorf("%s: fields %v, want %v (%v)", c.name, got, c.fields, err)
		}
	}
}

func TestSIEMSinkUpdateKeepsSecretsAndSkipNeedsAReason(t *testing.T) {
	spec := SIEMSinkSpec{Name: "splunk", Transport: SIEMTransportHTTPS, URL: "https://splunk.example/services/collector/event", Profile: SIEMProfileHEC,
		Format: SIEMFormatOCSF, Token: SealedPrefix + "t", RedactKey: SealedPrefix + "r"}
	created, err := ConfigureSIEMSink(NewSIEMSink{SinkID: uuid.NewString(), Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	k, err := RehydrateSIEMSink([]Recorded{rec(created, 1)})
	if err != nil {
		t.Fatal(err)
	}
	same := spec
	same.Token = ""
	if ev, err := k.Update(same); ev != nil || err != nil {
		t.Fatalf("update with secrets left out changed %v, %v", ev, err)
	}
	same.MinSeverity = 3
	ev, err := k.Update(same)
	if err != nil || ev == nil || ev.Token != spec.Token || ev.RedactKey != spec.RedactKey || ev.MinSeverity != 3 {
		t.Fatalf("update: %+v, %v", ev, err)
	}
	if _, err := k.Skip(5, 10, " "); !errors.Is(err, ErrValidation) {
		t.Errorf("skip without a reason: %v", err)
	}
	if _, err := k.Skip(11, 10, "refused"); !errors.Is(err, ErrValidation) {
		t.Errorf("skip past the head: %v", err)
	}
	removed, err := k.Remove("gone")
	if err != nil {
		t.Fatal(err)
	}
	k, err = RehydrateSIEMSink([]Recorded{rec(created, 1), rec(removed, 2)})
	if err != nil || !k.Removed() {
		t.Fatal(k, err)
	}
	if _, err := k.Skip(5, 10, "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("skip on a removed sink: %v", err)
	}
}

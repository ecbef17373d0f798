package commands_test

import (
	"errors"
	"testing"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
)

func hecSpec(name string) domain.SIEMSinkSpec {
	return domain.SIEMSinkSpec{Name: name, Transport: domain.SIEMTransportHTTPS, URL: "https://splunk.example:8088/services/collector/event",
		Profile: domain.SIEMProfileHEC, Format: domain.SIEMFormatOCSF, Token: domain.SealedPrefix + "c2VhbGVk"}
}

// Who may configure, change, skip for and remove which SIEM sink: platform sinks are the
// superadmin's; an org's sinks its owners' and admins'; nobody reaches another org's sink.
func TestSIEMSinkRightsMatrix(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	org := h.bootstrap(t)
	other, err := h.svc.Handlers.CreateOrganization.Handle(as("root"), commands.CreateOrganization{Name: "globex", Owner: "gina"})
	if err != nil {
		t.Fatal(err)
	}
	for user, role := range map[string]domain.Role{"adam": domain.RoleAdmin, "opal": domain.RoleOperator, "vera": domain.RoleViewer, "aud": domain.RoleAuditor} {
		if _, err := h.svc.Handlers.AssignRole.Handle(as("alice"), commands.AssignRole{OrgID: org, UserID: user, Role: role}); err != nil {
			t.Fatal(err)
		}
	}
	type action func(user, orgID, sinkID string) error
	configure := func(user, orgID, _ string) error {
		_, err := h.svc.Handlers.ConfigureSIEMSink.Handle(as(user), commands.ConfigureSIEMSink{OrgID: orgID, Spec: hecSpec("s-" + user)})
		return err
	}
	update := func(user, orgID, sinkID string) error {
		_, err := h.svc.Handlers.UpdateSIEMSink.Handle(as(user), commands.UpdateSIEMSink{OrgID: orgID, SinkID: sinkID, Spec: hecSpec("renamed-" + user)})
		return err
	}
	skip := func(user, orgID, sinkID string) error {
		_, err := h.svc.Handlers.SkipSIEMDelivery.Handle(as(user), commands.SkipSIEMDelivery{OrgID: orgID, SinkID: sinkID, Position: 1, Reason: "test"})
		return err
	}
	remove := func(user, orgID, sinkID string) error {
		_, err := h.svc.Handlers.RemoveSIEMSink.Handle(as(user), commands.RemoveSIEMSink{OrgID: orgID, SinkID: sinkID})
		return err
	}
	newSink := func(orgID string) string {
		t.Helper()
		res, err := h.svc.Handlers.ConfigureSIEMSink.Handle(as("root"), commands.ConfigureSIEMSink{OrgID: orgID, Spec: hecSpec("fixture")})
		if err != nil {
			t.Fatal(err)
		}
		return res.ID
	}
	cases := []struct {
		user     string
		platform bool // a platform sink, else one of acme
		allowed  bool
	}{
		{"root", true, true}, {"root", false, true},
		{"alice", true, false}, {"alice", false, true}, // owner
		{"adam", true, false}, {"adam", false, true}, // admin
		{"opal", false, false}, {"vera", false, false}, {"aud", false, false}, {"mallory", false, false},
		{"gina", false, false}, // owner of another org
	}
	for _, c := range cases {
		orgID := org
		if c.platform {
			orgID = ""
		}
		for name, act := range map[string]action{"configure": configure, "update": update, "skip": skip, "remove": remove} {
			sinkID := newSink(orgID)
			err := act(c.user, orgID, sinkID)
			if c.allowed && err != nil {
				t.Errorf("%s %s (platform %v): %v", c.user, name, c.platform, err)
			}
			if !c.allowed && !errors.Is(err, commands.ErrForbidden) {
				t.Errorf("%s %s (platform %v): %v, want forbidden", c.user, name, c.platform, err)
			}
		}
	}
	// An org's sink is not found through another org, nor as a platform sink.
	acmeSink := newSink(org)
	for _, orgID := range []string{other.ID, ""} {
		if err := update("root", orgID, acmeSink); !errors.Is(err, domain.ErrNotFound) {
			t.Errorf("acme's sink updated through org %q: %v", orgID, err)
		}
	}
	// Only platform sinks may name the control plane's environment or files.
	ref := hecSpec("ref")
	ref.Token = "env:HEC_TOKEN"
	if _, err := h.svc.Handlers.ConfigureSIEMSink.Handle(as("alice"), commands.ConfigureSIEMSink{OrgID: org, Spec: ref}); !errors.Is(err, domain.ErrValidation) {
		t.Errorf("org sink with an env reference: %v", err)
	}
	if _, err := h.svc.Handlers.ConfigureSIEMSink.Handle(as("root"), commands.ConfigureSIEMSink{Spec: ref}); err != nil {
		t.Errorf("platform sink with an env reference: %v", err)
	}
	// A clear secret never reaches the log.
	clear := hecSpec("clear")
	clear.Token = "11111111-2222-3333-4444-555555555555"
	if _, err := h.svc.Handlers.ConfigureSIEMSink.Handle(as("root"), commands.ConfigureSIEMSink{Spec: clear}); !errors.Is(err, domain.ErrValidation) {
		t.Errorf("clear token: %v", err)
	}
}

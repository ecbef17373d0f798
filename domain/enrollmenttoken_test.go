package domain_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
)

func enrollmentStream(t *testing.T, evs ...domain.Event) []domain.Recorded {
	t.Helper()
	out := make([]domain.Recorded, len(evs))
	for i, e := range evs {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = domain.Recorded{Type: e.EventType(), Payload: b, StreamVersion: uint64(i + 1)}
	}
	return out
}

func TestEnrollmentTokenUse(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const id, node1, node2 = "0193c8a0-0000-7000-8000-000000000001", "0193c8a0-0000-7000-8000-0000000000a1", "0193c8a0-0000-7000-8000-0000000000a2"
	raw := domain.EnrollmentTokenPrefix + id + "_secret"
	issued, err := domain.IssueEnrollmentToken(domain.NewEnrollmentToken{TokenID: id, IssuedBy: "root", SecretHash: domain.HashEnrollmentSecret(raw),
		Now: now, TTL: time.Hour, MaxUses: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := domain.ParseEnrollmentToken(raw); !ok || got != id {
		t.Fatalf("parse %q: %q %v", raw, got, ok)
	}
	for _, bad := range []string{"", "tpe_", "tpe_" + id, "tpe_" + id + "_", "tpe_not-an-id_x", "tpk_" + id + "_x"} {
		if _, ok := domain.ParseEnrollmentToken(bad); ok {
			t.Errorf("parse %q: accepted", bad)
		}
	}
	for _, tc := range []struct {
		name    string
		history []domain.Event
		at      time.Time
		want    error
	}{
		{"fresh", nil, now, nil},
		{"second of two", []domain.Event{domain.EnrollmentTokenUsed{TokenID: id, NodeID: node1, Use: 1}}, now, nil},
		{"used up", []domain.Event{domain.EnrollmentTokenUsed{TokenID: id, NodeID: node1, Use: 1}, domain.EnrollmentTokenUsed{TokenID: id, NodeID: node2, Use: 2}}, now, domain.ErrEnrollmentTokenUsed},
		{"at expiry", nil, now.Add(time.Hour), domain.ErrEnrollmentTokenExpired},
		{"revoked", []domain.Event{domain.EnrollmentTokenRevoked{TokenID: id}}, now, domain.ErrEnrollmentTokenRevoked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := domain.RehydrateEnrollmentToken(enrollmentStream(t, append([]domain.Event{issued}, tc.history...)...))
			if err != nil {
				t.Fatal(err)
			}
			if !tok.Matches(raw) || tok.Matches(raw+"x") {
				t.Fatal("Matches")
			}
			used, err := tok.Use(node2, tc.at)
			if !errors.Is(err, tc.want) || (err == nil && (used.NodeID != node2 || used.Use != tok.Uses()+1)) {
				t.Fatalf("use: %+v %v, want %v", used, err, tc.want)
			}
		})
	}
	for _, in := range []domain.NewEnrollmentToken{
		{TokenID: id, IssuedBy: "root", SecretHash: domain.HashEnrollmentSecret(raw), Now: now, TTL: 8 * 24 * time.Hour, MaxUses: 1},
		{TokenID: id, IssuedBy: "root", SecretHash: domain.HashEnrollmentSecret(raw), Now: now, TTL: time.Hour, MaxUses: 0},
		{TokenID: id, IssuedBy: "root", SecretHash: "nope", Now: now, TTL: time.Hour, MaxUses: 1},
		{TokenID: "x", IssuedBy: "root", SecretHash: domain.HashEnrollmentSecret(raw), Now: now, TTL: time.Hour, MaxUses: 1},
	} {
		if _, err := domain.IssueEnrollmentToken(in); !errors.Is(err, domain.ErrValidation) {
			t.Errorf("%+v: %v, want a validation error", in, err)
		}
	}
}

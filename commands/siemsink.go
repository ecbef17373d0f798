package commands

import (
	"context"
	"fmt"

	"github.com/tunnelplane/tunnelplane/domain"
)

// A SIEM sink of an organization (OrgID set) needs the org's owner or admin and receives only
// that organization's events; a platform sink (OrgID empty) needs a superadmin.
func siemPermission(orgID, action string) Permission {
	if orgID == "" {
		orgID = domain.PlatformOrg
	}
	return Permission{Org: orgID, Object: ObjSIEM, Action: action}
}

// ConfigureSIEMSink starts forwarding the log to a SIEM. Secrets in Spec are sealed or references
// (domain.SealedPrefix): the API seals what a caller sends in clear before it builds the command.
type ConfigureSIEMSink struct {
	OrgID string              `json:"org_id,omitempty"`
	Spec  domain.SIEMSinkSpec `json:"spec"`
}

func (ConfigureSIEMSink) CommandName() string { return "ConfigureSIEMSink" }
func (c ConfigureSIEMSink) Permission() Permission {
	return siemPermission(c.OrgID, ActCreate)
}

func (s *Service) configureSIEMSink(ctx context.Context, c ConfigureSIEMSink) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	sinkID := g.next().String()
	if c.OrgID != "" {
		if err := s.requireOrg(ctx, c.OrgID); err != nil {
			return Result{}, err
		}
	}
	ev, err := domain.ConfigureSIEMSink(domain.NewSIEMSink{SinkID: sinkID, OrgID: c.OrgID, Spec: c.Spec})
	if err != nil {
		return Result{}, err
	}
	meta := metadata(ctx, c.CommandName(), c.OrgID, s.cfg.Now())
	return s.decideAndAppend(ctx, g, meta, failOnConflict, func() (decision, error) {
		return changed(sinkID, domain.SIEMSinkStream(sinkID), 0, ev), nil
	})
}

// UpdateSIEMSink replaces a sink's spec; secrets left empty keep their value.
type UpdateSIEMSink struct {
	OrgID           string              `json:"org_id,omitempty"`
	SinkID          string              `json:"sink_id"`
	Spec            domain.SIEMSinkSpec `json:"spec"`
	ExpectedVersion *uint64             `json:"expected_version,omitempty"`
	// RedactClientIPs keeps the sink's redaction key, or takes Spec.RedactKey (a new sealed one)
	// when it has none; false ends redaction.
	RedactClientIPs bool `json:"redact_client_ips,omitempty"`
}

func (UpdateSIEMSink) CommandName() string { return "UpdateSIEMSink" }
func (c UpdateSIEMSink) Permission() Permission {
	return siemPermission(c.OrgID, ActUpdate)
}

func (s *Service) updateSIEMSink(ctx context.Context, c UpdateSIEMSink) (Result, error) {
	return s.onSIEMSink(ctx, c.CommandName(), c.OrgID, c.SinkID, c.ExpectedVersion, func(k *domain.SIEMSink) (domain.Event, error) {
		spec := c.Spec
		switch {
		case !c.RedactClientIPs:
			spec.RedactKey = ""
		case k.Spec().RedactKey != "":
			spec.RedactKey = k.Spec().RedactKey
		}
		ev, err := k.Update(spec)
		if ev == nil || err != nil {
			return nil, err
		}
		return ev, nil
	})
}

// RemoveSIEMSink stops a sink for good.
type RemoveSIEMSink struct {
	OrgID  string `json:"org_id,omitempty"`
	SinkID string `json:"sink_id"`
	Reason string `json:"reason,omitempty"`
}

func (RemoveSIEMSink) CommandName() string { return "RemoveSIEMSink" }
func (c RemoveSIEMSink) Permission() Permission {
	return siemPermission(c.OrgID, ActDelete)
}

func (s *Service) removeSIEMSink(ctx context.Context, c RemoveSIEMSink) (Result, error) {
	return s.onSIEMSink(ctx, c.CommandName(), c.OrgID, c.SinkID, nil, func(k *domain.SIEMSink) (domain.Event, error) {
		return k.Remove(c.Reason)
	})
}

// SkipSIEMDelivery makes a sink give up one record its receiver refuses for good. The only way
// a record is ever not delivered, and itself in the log.
type SkipSIEMDelivery struct {
	OrgID    string `json:"org_id,omitempty"`
	SinkID   string `json:"sink_id"`
	Position uint64 `json:"position"`
	Reason   string `json:"reason"`
}

func (SkipSIEMDelivery) CommandName() string { return "SkipSIEMDelivery" }
func (c SkipSIEMDelivery) Permission() Permission {
	return siemPermission(c.OrgID, ActSkip)
}

func (s *Service) skipSIEMDelivery(ctx context.Context, c SkipSIEMDelivery) (Result, error) {
	head, err := s.store.Head(ctx)
	if err != nil {
		return Result{}, err
	}
	return s.onSIEMSink(ctx, c.CommandName(), c.OrgID, c.SinkID, nil, func(k *domain.SIEMSink) (domain.Event, error) {
		return k.Skip(c.Position, head, c.Reason)
	})
}

// onSIEMSink loads a sink of orgID ("" for platform sinks) and appends what decide returns (nil:
// nothing changed).
func (s *Service) onSIEMSink(ctx context.Context, command, orgID, sinkID string, expected *uint64, decide func(*domain.SIEMSink) (domain.Event, error)) (Result, error) {
	g := newIDGen(ctx, command)
	meta := metadata(ctx, command, orgID, s.cfg.Now())
	return s.decideAndAppend(ctx, g, meta, retryUnlessPinned(expected), func() (decision, error) {
		k, err := s.loadSIEMSink(ctx, orgID, sinkID)
		if err != nil {
			return decision{}, err
		}
		if expected != nil && *expected != k.Version() {
			return decision{}, fmt.Errorf("siem sink %s is at version %d, not %d: %w", sinkID, k.Version(), *expected, domain.ErrConflict)
		}
		ev, err := decide(k)
		if err != nil {
			return decision{}, err
		}
		if ev == nil {
			return unchanged(k.ID(), k.Version()), nil
		}
		return changed(k.ID(), domain.SIEMSinkStream(k.ID()), k.Version(), ev), nil
	})
}

// loadSIEMSink loads a sink; one of another org (or a platform sink asked for as an org's) is
// "not found".
func (s *Service) loadSIEMSink(ctx context.Context, orgID, sinkID string) (*domain.SIEMSink, error) {
	if !domain.ValidID(sinkID) {
		return nil, fmt.Errorf("siem sink %q: %w", sinkID, domain.ErrNotFound)
	}
	recs, err := s.load(ctx, domain.SIEMSinkStream(sinkID))
	if err != nil {
		return nil, err
	}
	k, err := domain.RehydrateSIEMSink(recs)
	if err != nil {
		return nil, err
	}
	if k.OrgID() != orgID {
		return nil, fmt.Errorf("siem sink %s: %w", sinkID, domain.ErrNotFound)
	}
	return k, nil
}

package commands

import (
	"context"
	"fmt"

	"github.com/tunnelplane/tunnelplane/domain"
)

// complianceKinds are the report kinds read as the audit log is (an organization's owners,
// admins and auditors; the whole log superadmins). Every other kind (usage, chargeback,
// capacity, forecast) is read as the organization's analytics are.
var complianceKinds = map[string]bool{"soc2": true, "hipaa": true, "iso27001": true}

// ComplianceReportKinds are the kinds read as the audit log is.
func ComplianceReportKinds() []string { return []string{"soc2", "hipaa", "iso27001"} }

// ReportReadPermission is who may read reports of kind for orgID ("" or "*": the whole log).
// Managing a schedule of that kind needs the same: a schedule only makes, on a clock, what its
// owner could ask for.
func ReportReadPermission(orgID, kind string) Permission {
	if orgID == "" {
		orgID = domain.PlatformOrg
	}
	if complianceKinds[kind] {
		return Permission{Org: orgID, Object: ObjAudit, Action: ActRead}
	}
	return Permission{Org: orgID, Object: ObjAnalytics, Action: ActRead}
}

// CreateReportSchedule starts a schedule. OrgID empty: the whole log. A TimeZone left empty is
// the organization's (organization.settings_updated), else UTC.
type CreateReportSchedule struct {
	OrgID string                    `json:"org_id,omitempty"`
	Spec  domain.ReportScheduleSpec `json:"spec"`
}

func (CreateReportSchedule) CommandName() string { return "CreateReportSchedule" }
func (c CreateReportSchedule) Permission() Permission {
	return ReportReadPermission(c.OrgID, c.Spec.Kind)
}

func (s *Service) createReportSchedule(ctx context.Context, c CreateReportSchedule) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	id := g.next().String()
	spec := c.Spec
	if c.OrgID != "" {
		if err := s.requireOrg(ctx, c.OrgID); err != nil {
			return Result{}, err
		}
		if spec.TimeZone == "" {
			tz, err := s.orgTimeZone(ctx, c.OrgID)
			if err != nil {
				return Result{}, err
			}
			spec.TimeZone = tz
		}
	}
	ev, err := domain.CreateReportSchedule(domain.NewReportSchedule{ScheduleID: id, OrgID: c.OrgID, CreatedBy: ActorFrom(ctx).ID, Now: s.cfg.Now(), Spec: spec})
	if err != nil {
		return Result{}, err
	}
	meta := metadata(ctx, c.CommandName(), c.OrgID, s.cfg.Now())
	return s.decideAndAppend(ctx, g, meta, failOnConflict, func() (decision, error) {
		return changed(id, domain.ReportScheduleStream(id), 0, ev), nil
	})
}

// orgTimeZone is the organization's time zone setting ("" when never set: UTC).
func (s *Service) orgTimeZone(ctx context.Context, orgID string) (string, error) {
	recs, err := s.load(ctx, domain.OrgSettingsStream(orgID))
	if err != nil || len(recs) == 0 {
		return "", err
	}
	e, err := domain.Decode(recs[len(recs)-1].Type, recs[len(recs)-1].Payload)
	if err != nil {
		return "", err
	}
	if st, ok := e.(*domain.OrgSettingsUpdated); ok {
		return st.TimeZone, nil
	}
	return "", nil
}

// ReportScheduleTarget names a schedule. Kind is the schedule's (the API reads it before it
// asks): it decides who may act, and a schedule of another kind is not found.
type ReportScheduleTarget struct {
	OrgID      string `json:"org_id,omitempty"`
	ScheduleID string `json:"schedule_id"`
	Kind       string `json:"kind"`
}

// UpdateReportSchedule replaces a schedule's spec from now on; the kind stays.
type UpdateReportSchedule struct {
	ReportScheduleTarget
	Spec            domain.ReportScheduleSpec `json:"spec"`
	ExpectedVersion *uint64                   `json:"expected_version,omitempty"`
}

func (UpdateReportSchedule) CommandName() string { return "UpdateReportSchedule" }
func (c UpdateReportSchedule) Permission() Permission {
	return ReportReadPermission(c.OrgID, c.Kind)
}

func (s *Service) updateReportSchedule(ctx context.Context, c UpdateReportSchedule) (Result, error) {
	return s.onReportSchedule(ctx, c.CommandName(), c.ReportScheduleTarget, c.ExpectedVersion, func(k *domain.ReportSchedule) (domain.Event, error) {
		ev, err := k.Update(c.Spec, s.cfg.Now())
		if ev == nil || err != nil {
			return nil, err
		}
		return ev, nil
	})
}

// PauseReportSchedule stops a schedule's runs until it is resumed (runs due meanwhile are not
// made).
type PauseReportSchedule struct{ ReportScheduleTarget }

func (PauseReportSchedule) CommandName() string { return "PauseReportSchedule" }
func (c PauseReportSchedule) Permission() Permission {
	return ReportReadPermission(c.OrgID, c.Kind)
}

func (s *Service) pauseReportSchedule(ctx context.Context, c PauseReportSchedule) (Result, error) {
	return s.onReportSchedule(ctx, c.CommandName(), c.ReportScheduleTarget, nil, func(k *domain.ReportSchedule) (domain.Event, error) {
		ev, err := k.Pause()
		if ev == nil || err != nil {
			return nil, err
		}
		return ev, nil
	})
}

// ResumeReportSchedule runs a paused schedule again: its next run is the first due from now.
type ResumeReportSchedule struct{ ReportScheduleTarget }

func (ResumeReportSchedule) CommandName() string { return "ResumeReportSchedule" }
func (c ResumeReportSchedule) Permission() Permission {
	return ReportReadPermission(c.OrgID, c.Kind)
}

func (s *Service) resumeReportSchedule(ctx context.Context, c ResumeReportSchedule) (Result, error) {
	return s.onReportSchedule(ctx, c.CommandName(), c.ReportScheduleTarget, nil, func(k *domain.ReportSchedule) (domain.Event, error) {
		ev, err := k.Resume(s.cfg.Now())
		if ev == nil || err != nil {
			return nil, err
		}
		return ev, nil
	})
}

// DeleteReportSchedule ends a schedule. The reports it made stay.
type DeleteReportSchedule struct{ ReportScheduleTarget }

func (DeleteReportSchedule) CommandName() string { return "DeleteReportSchedule" }
func (c DeleteReportSchedule) Permission() Permission {
	return ReportReadPermission(c.OrgID, c.Kind)
}

func (s *Service) deleteReportSchedule(ctx context.Context, c DeleteReportSchedule) (Result, error) {
	return s.onReportSchedule(ctx, c.CommandName(), c.ReportScheduleTarget, nil, func(k *domain.ReportSchedule) (domain.Event, error) {
		return k.Delete()
	})
}

// onReportSchedule loads the schedule t names and appends what decide returns (nil: nothing
// changed).
func (s *Service) onReportSchedule(ctx context.Context, command string, t ReportScheduleTarget, expected *uint64, decide func(*domain.ReportSchedule) (domain.Event, error)) (Result, error) {
	g := newIDGen(ctx, command)
	meta := metadata(ctx, command, t.OrgID, s.cfg.Now())
	return s.decideAndAppend(ctx, g, meta, retryUnlessPinned(expected), func() (decision, error) {
		k, err := s.LoadReportSchedule(ctx, t.OrgID, t.ScheduleID)
		if err != nil {
			return decision{}, err
		}
		if k.Spec().Kind != t.Kind {
			return decision{}, fmt.Errorf("report schedule %s: %w", t.ScheduleID, domain.ErrNotFound)
		}
		if expected != nil && *expected != k.Version() {
			return decision{}, fmt.Errorf("report schedule %s is at version %d, not %d: %w", t.ScheduleID, k.Version(), *expected, domain.ErrConflict)
		}
		ev, err := decide(k)
		if err != nil {
			return decision{}, err
		}
		if ev == nil {
			return unchanged(k.ID(), k.Version()), nil
		}
		return changed(k.ID(), domain.ReportScheduleStream(k.ID()), k.Version(), ev), nil
	})
}

// LoadReportSchedule loads a schedule of orgID ("" for the whole log's); one of another scope,
// or deleted, is "not found". It authorizes nothing: callers decide who may see it.
func (s *Service) LoadReportSchedule(ctx context.Context, orgID, scheduleID string) (*domain.ReportSchedule, error) {
	if !domain.ValidID(scheduleID) {
		return nil, fmt.Errorf("report schedule %q: %w", scheduleID, domain.ErrNotFound)
	}
	recs, err := s.load(ctx, domain.ReportScheduleStream(scheduleID))
	if err != nil {
		return nil, err
	}
	k, err := domain.RehydrateReportSchedule(recs)
	if err != nil {
		return nil, err
	}
	if k.OrgID() != orgID || k.Deleted() {
		return nil, fmt.Errorf("report schedule %s: %w", scheduleID, domain.ErrNotFound)
	}
	return k, nil
}

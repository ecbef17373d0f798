package commands

import (
	"context"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
)

// SetOrgTimeZone sets the time zone in which an organization's usage days, ISO weeks and months
// and its chargeback months are counted.
type SetOrgTimeZone struct {
	OrgID    string `json:"org_id"`
	TimeZone string `json:"time_zone"`
}

func (SetOrgTimeZone) CommandName() string { return "SetOrgTimeZone" }
func (c SetOrgTimeZone) Permission() Permission {
	return Permission{Org: c.OrgID, Object: ObjAnalytics, Action: ActUpdate}
}

func (s *Service) setOrgTimeZone(ctx context.Context, c SetOrgTimeZone) (Result, error) {
	ev, err := domain.UpdateOrgSettings(c.OrgID, c.TimeZone)
	if err != nil {
		return Result{}, err
	}
	if err := s.requireOrg(ctx, c.OrgID); err != nil {
		return Result{}, err
	}
	g := newIDGen(ctx, c.CommandName())
	meta := metadata(ctx, c.CommandName(), c.OrgID, s.cfg.Now())
	stream := domain.OrgSettingsStream(c.OrgID)
	return s.decideAndAppend(ctx, g, meta, retryOnConflict, func() (decision, error) {
		recs, err := s.load(ctx, stream)
		if err != nil {
			return decision{}, err
		}
		version := uint64(len(recs))
		if n := len(recs); n > 0 {
			version = recs[n-1].StreamVersion
			if e, err := domain.Decode(recs[n-1].Type, recs[n-1].Payload); err == nil {
				if cur, ok := e.(*domain.OrgSettingsUpdated); ok && *cur == ev {
					return unchanged(c.OrgID, version), nil
				}
			}
		}
		return changed(c.OrgID, stream, version, ev), nil
	})
}

// SetPriceSheet sets the chargeback prices of an organization from EffectiveFrom on (a whole
// hour, not in the past). Earlier hours keep the prices they were used under.
type SetPriceSheet struct {
	OrgID           string    `json:"org_id"`
	EffectiveFrom   time.Time `json:"effective_from"`
	Currency        string    `json:"currency"`
	PerGBIn         string    `json:"per_gb_in"`
	PerGBOut        string    `json:"per_gb_out"`
	Per1kRequests   string    `json:"per_1k_requests"`
	PerStreamedHour string    `json:"per_streamed_hour"`
	PerTunnelDay    string    `json:"per_tunnel_day"`
}

func (SetPriceSheet) CommandName() string { return "SetPriceSheet" }
func (c SetPriceSheet) Permission() Permission {
	return Permission{Org: c.OrgID, Object: ObjAnalytics, Action: ActUpdate}
}

func (s *Service) setPriceSheet(ctx context.Context, c SetPriceSheet) (Result, error) {
	ev, err := domain.SetPriceSheet(domain.PriceSheetSet(c), s.cfg.Now())
	if err != nil {
		return Result{}, err
	}
	if err := s.requireOrg(ctx, c.OrgID); err != nil {
		return Result{}, err
	}
	g := newIDGen(ctx, c.CommandName())
	meta := metadata(ctx, c.CommandName(), c.OrgID, s.cfg.Now())
	return s.appendAtEnd(ctx, g, meta, c.OrgID, domain.PriceSheetStream(c.OrgID), ev)
}

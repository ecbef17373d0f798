package reach

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// ReadModels is what the live answer reads of the read models (a *readmodels.Queries).
type ReadModels interface {
	GetTunnel(ctx context.Context, orgID, id string) (readmodels.Tunnel, error)
	ListRoleAssignments(ctx context.Context, f readmodels.RoleAssignmentFilter) ([]readmodels.RoleAssignment, error)
	ListAccessKeys(ctx context.Context, f readmodels.AccessKeyFilter) ([]readmodels.AccessKey, error)
}

// Streams reads one stream of the log (an *eventstore.Store): grants have no read model, the
// decisions read them from the tunnel's sharing stream, and so does the live answer; and the
// log's user deletions by type (rare; they have no read model either).
type Streams interface {
	ReadStream(ctx context.Context, streamID string, from uint64, limit int) ([]eventstore.Record, error)
	ReadTypes(ctx context.Context, types []string, from, upTo uint64, limit int) ([]eventstore.Record, error)
}

const livePage = 1000

// Live answers who can reach the tunnel now, from the read models (tunnels, role assignments,
// access keys) and the tunnel's sharing stream folded by its aggregate. The caller waits for the
// read models to hold position first and passes it on.
func Live(ctx context.Context, rm ReadModels, st Streams, orgID, tunnelID string, now time.Time, position uint64) (Answer, error) {
	t, err := rm.GetTunnel(ctx, orgID, tunnelID)
	if err != nil {
		return Answer{}, err
	}
	f := newFacts()
	f.tunnel = TunnelInfo{ID: t.ID, OrgID: t.OrgID, Name: t.Name, Owner: t.Owner, State: TunnelActive}
	if t.State == readmodels.TunnelDeleted {
		f.tunnel.State = TunnelDeleted
	}
	if err := f.liveTunnel(ctx, st, tunnelID); err != nil {
		return Answer{}, err
	}
	if err := f.liveRoles(ctx, rm, orgID); err != nil {
		return Answer{}, err
	}
	if err := f.liveGrants(ctx, st, orgID, tunnelID); err != nil {
		return Answer{}, err
	}
	if err := f.liveKeys(ctx, rm, orgID, tunnelID); err != nil {
		return Answer{}, err
	}
	if err := f.liveDeletions(ctx, st); err != nil {
		return Answer{}, err
	}
	return f.answer(now, SourceLive, position)
}

// liveDeletions reads the log's user.deleted records (the whole log: deletions are few).
func (f *facts) liveDeletions(ctx context.Context, st Streams) error {
	for from := uint64(0); ; {
		page, err := st.ReadTypes(ctx, []string{domain.TypeUserDeleted}, from, math.MaxInt64, livePage)
		if err != nil {
			return fmt.Errorf("live: %w", err)
		}
		for _, r := range page {
			var e domain.UserDeleted
			if err := json.Unmarshal(r.Payload, &e); err != nil {
				return fmt.Errorf("live: position %d: %w", r.Position, err)
			}
			if err := f.deleted(&e, r); err != nil {
				return fmt.Errorf("live: %w", err)
			}
		}
		if len(page) < livePage {
			return nil
		}
		from = page[len(page)-1].Position + 1
	}
}

// liveTunnel reads the tunnel's stream for its creation and the event that gave it its labels.
func (f *facts) liveTunnel(ctx context.Context, st Streams, tunnelID string) error {
	for from := uint64(1); ; {
		page, err := st.ReadStream(ctx, domain.TunnelStream(tunnelID), from, livePage)
		if err != nil {
			return fmt.Errorf("live: %w", err)
		}
		for _, r := range page {
			if r.StreamVersion == 1 {
				ref := refOf(r, false)
				f.tunnel.Created = &ref
			}
			ev, err := domain.Decode(r.Type, r.Payload)
			if err != nil {
				return fmt.Errorf("live: %w", err)
			}
			switch e := ev.(type) {
			case *domain.TunnelCreated:
				if len(e.Labels) > 0 {
					f.label(e.Labels, r)
				}
			case *domain.TunnelUpdated:
				if e.Labels != nil {
					f.label(*e.Labels, r)
				}
			}
		}
		if len(page) < livePage || from > MaxFoldRecords {
			return nil
		}
		from = page[len(page)-1].StreamVersion + 1
	}
}

func (f *facts) liveRoles(ctx context.Context, rm ReadModels, orgID string) error {
	for _, org := range []string{orgID, domain.PlatformOrg} {
		var after *readmodels.RoleAssignmentKey
		for n := 0; ; {
			rows, err := rm.ListRoleAssignments(ctx, readmodels.RoleAssignmentFilter{OrgID: org, After: after, Limit: livePage})
			if err != nil {
				return fmt.Errorf("live: %w", err)
			}
			for _, r := range rows {
				ref := Ref{Type: domain.TypeRoleAssigned, Position: uint64(r.Position), RecordedAt: r.AssignedAt.UTC()}
				switch {
				case org == domain.PlatformOrg:
					if domain.Role(r.Role) == domain.RoleSuperadmin {
						f.supers[r.UserID] = ref
					}
				default:
					if f.roles[r.UserID] == nil {
						f.roles[r.UserID] = map[domain.Role]Ref{}
					}
					f.roles[r.UserID][domain.Role(r.Role)] = ref
				}
			}
			if n += len(rows); n > 6*MaxSubjects {
				return fmt.Errorf("live: %w: more than %d role assignments", ErrTooMany, 6*MaxSubjects)
			}
			if len(rows) < livePage {
				break
			}
			after = &readmodels.RoleAssignmentKey{UserID: rows[len(rows)-1].UserID, Role: rows[len(rows)-1].Role}
		}
	}
	if len(f.roles) > MaxSubjects {
		return fmt.Errorf("live: %w: more than %d members", ErrTooMany, MaxSubjects)
	}
	return nil
}

// liveGrants folds the sharing stream with the aggregate the decisions use, and finds each
// grant's request and approvals by the ids its payload names.
func (f *facts) liveGrants(ctx context.Context, st Streams, orgID, tunnelID string) error {
	var recs []eventstore.Record
	for from := uint64(1); ; {
		page, err := st.ReadStream(ctx, domain.SharingStream(tunnelID), from, livePage)
		if err != nil {
			return fmt.Errorf("live: %w", err)
		}
		recs = append(recs, page...)
		if len(recs) > MaxFoldRecords {
			return fmt.Errorf("live: %w: more than %d sharing events", ErrTooMany, MaxFoldRecords)
		}
		if len(page) < livePage {
			break
		}
		from = page[len(page)-1].StreamVersion + 1
	}
	recorded := make([]domain.Recorded, len(recs))
	events := map[string]sharingEvent{}
	grantRefs := map[string]Ref{}
	for i, r := range recs {
		recorded[i] = domain.Recorded{Type: r.Type, Payload: r.Payload, StreamVersion: r.StreamVersion, RecordedAt: r.RecordedAt}
		ev, err := domain.Decode(r.Type, r.Payload)
		if err != nil {
			return fmt.Errorf("live: %w", err)
		}
		switch e := ev.(type) {
		case *domain.AccessRequested:
			events[e.RequestID] = sharingEvent{event: ev, ref: refOf(r, true)}
		case *domain.AccessApproved:
			events[e.ApprovalID] = sharingEvent{event: ev, ref: refOf(r, true)}
		case *domain.GrantCreated:
			grantRefs[e.GrantID] = refOf(r, true)
		}
	}
	sh, err := domain.RehydrateSharing(orgID, tunnelID, recorded)
	if err != nil {
		return fmt.Errorf("live: %w", err)
	}
	for _, g := range sh.Grants() {
		f.grants = append(f.grants, grantFact{state: g, chain: chainOf(&g.GrantCreated, grantRefs[g.GrantID], events)})
	}
	return nil
}

// liveKeys lists the tunnel's access keys and its organization's keys scoped by labels (answer
// keeps those whose selector the tunnel's labels match).
func (f *facts) liveKeys(ctx context.Context, rm ReadModels, orgID, tunnelID string) error {
	for _, filter := range []readmodels.AccessKeyFilter{{TunnelID: tunnelID}, {LabelScoped: true}} {
		filter.OrgID, filter.State, filter.Limit = orgID, readmodels.TokenActive, livePage
		for {
			rows, err := rm.ListAccessKeys(ctx, filter)
			if err != nil {
				return fmt.Errorf("live: %w", err)
			}
			for _, k := range rows {
				// Keys active by the database's clock; answer checks the expiry again against now.
				f.keys = append(f.keys, keyFact{id: k.ID, revoked: k.RevokedAt != nil, selector: k.Selector, key: Key{IssuedBy: k.IssuedBy, ExpiresAt: k.ExpiresAt.UTC(), CIDRs: k.CIDRs,
					Event: Ref{Type: domain.TypeAccessKeyIssued, Position: uint64(k.Position), RecordedAt: k.IssuedAt.UTC()}}})
			}
			if len(f.keys) > MaxSubjects {
				return fmt.Errorf("live: %w: more than %d access keys", ErrTooMany, MaxSubjects)
			}
			if len(rows) < livePage {
				break
			}
			filter.After = &readmodels.AgentTokenKey{IssuedAt: rows[len(rows)-1].IssuedAt, ID: rows[len(rows)-1].ID}
		}
	}
	return nil
}

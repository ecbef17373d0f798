package reach

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// Log is what a replay reads of the event log (an *eventstore.Store).
type Log interface {
	ReadTypes(ctx context.Context, types []string, from, upTo uint64, limit int) ([]eventstore.Record, error)
	PositionAt(ctx context.Context, t time.Time) (uint64, bool, error)
}

// replayTypes are the event types that decide who may reach a tunnel; nothing else is read.
var replayTypes = []string{
	domain.TypeTunnelCreated, domain.TypeTunnelUpdated, domain.TypeTunnelDeleted,
	domain.TypeRoleAssigned, domain.TypeRoleUnassigned,
	domain.TypeGrantCreated, domain.TypeGrantRevoked, domain.TypeGrantExpired,
	domain.TypeAccessRequested, domain.TypeAccessApproved,
	domain.TypeAccessKeyIssued, domain.TypeAccessKeyRevoked,
	domain.TypeUserDeleted,
}

const replayPage = 5000

// MaxFoldRecords bounds the records a replay holds (the tunnel's sharing and keys, its
// organization's and the platform's role changes).
const MaxFoldRecords = 200000

// Replay answers who could reach the tunnel at at by folding the log up to the last position
// recorded at or before at. now bounds at (a future time is ErrInvalid).
func Replay(ctx context.Context, log Log, orgID, tunnelID string, at, now time.Time) (Answer, error) {
	if at.After(now) {
		return Answer{}, fmt.Errorf("%w: %s is in the future", ErrInvalid, at.UTC().Format(time.RFC3339Nano))
	}
	f := newFacts()
	f.tunnel = TunnelInfo{ID: tunnelID, OrgID: orgID, State: TunnelAbsent}
	upTo, ok, err := log.PositionAt(ctx, at)
	if err != nil {
		return Answer{}, fmt.Errorf("replay: %w", err)
	}
	if !ok {
		return f.answer(at, SourceReplay, 0)
	}
	// The deciding types only, in one pass over the log (ReadTypes), in log order.
	var recs []eventstore.Record
	for from := uint64(0); ; {
		page, err := log.ReadTypes(ctx, replayTypes, from, upTo, replayPage)
		if err != nil {
			return Answer{}, fmt.Errorf("replay: %w", err)
		}
		for _, r := range page {
			if relevant(r, orgID, tunnelID) {
				recs = append(recs, r)
			}
		}
		if len(recs) > MaxFoldRecords {
			return Answer{}, fmt.Errorf("replay: %w: more than %d records to fold", ErrTooMany, MaxFoldRecords)
		}
		if len(page) < replayPage {
			break
		}
		from = page[len(page)-1].Position + 1
	}
	if err := f.fold(recs); err != nil {
		return Answer{}, err
	}
	return f.answer(at, SourceReplay, upTo)
}

// relevant keeps the records of the tunnel, of its organization's roles and of superadmins
// (decoded only as far as the ids).
func relevant(r eventstore.Record, orgID, tunnelID string) bool {
	var p struct {
		OrgID    string `json:"org_id"`
		TunnelID string `json:"tunnel_id"`
	}
	if json.Unmarshal(r.Payload, &p) != nil {
		return false
	}
	switch r.Type {
	case domain.TypeRoleAssigned, domain.TypeRoleUnassigned, domain.TypeUserDeleted:
		return p.OrgID == orgID || p.OrgID == domain.PlatformOrg
	case domain.TypeAccessKeyIssued, domain.TypeAccessKeyRevoked:
		// The organization's keys scoped by labels (no tunnel) may call the tunnel too.
		return p.TunnelID == tunnelID || (p.TunnelID == "" && p.OrgID == orgID)
	}
	return p.TunnelID == tunnelID
}

func (f *facts) fold(recs []eventstore.Record) error {
	grants := map[string]*grantFact{}
	var order []string
	events := map[string]sharingEvent{} // requests and approvals by event id
	keys := map[string]*keyFact{}
	var keyOrder []string
	for _, r := range recs {
		ev, err := domain.Decode(r.Type, r.Payload)
		if err != nil {
			return fmt.Errorf("replay: position %d: %w", r.Position, err)
		}
		switch e := ev.(type) {
		case *domain.TunnelCreated:
			if e.OrgID != f.tunnel.OrgID {
				continue
			}
			ref := refOf(r, false)
			f.tunnel = TunnelInfo{ID: e.TunnelID, OrgID: e.OrgID, Name: e.Name, Owner: e.Owner, State: TunnelActive, Created: &ref}
			if len(e.Labels) > 0 {
				f.label(e.Labels, r)
			}
		case *domain.TunnelUpdated:
			if e.Name != nil {
				f.tunnel.Name = *e.Name // the name it had then
			}
			if e.Labels != nil {
				f.label(*e.Labels, r)
			}
		case *domain.TunnelDeleted:
			f.tunnel.State = TunnelDeleted
		case *domain.RoleAssigned:
			if e.OrgID == domain.PlatformOrg {
				if e.Role == domain.RoleSuperadmin {
					f.supers[e.UserID] = refOf(r, false)
				}
				continue
			}
			if f.roles[e.UserID] == nil {
				if len(f.roles) >= MaxSubjects {
					return fmt.Errorf("replay: %w: more than %d members", ErrTooMany, MaxSubjects)
				}
				f.roles[e.UserID] = map[domain.Role]Ref{}
			}
			f.roles[e.UserID][e.Role] = refOf(r, false)
		case *domain.RoleUnassigned:
			if e.OrgID == domain.PlatformOrg {
				if e.Role == domain.RoleSuperadmin {
					delete(f.supers, e.UserID)
				}
				continue
			}
			delete(f.roles[e.UserID], e.Role)
			if len(f.roles[e.UserID]) == 0 {
				delete(f.roles, e.UserID)
			}
		case *domain.AccessRequested, *domain.AccessApproved:
			events[r.EventID.String()] = sharingEvent{event: ev, ref: refOf(r, true)}
		case *domain.GrantCreated:
			grants[e.GrantID] = &grantFact{state: domain.GrantState{GrantCreated: *e}, chain: chainOf(e, refOf(r, true), events)}
			order = append(order, e.GrantID)
		case *domain.GrantRevoked:
			if g := grants[e.GrantID]; g != nil {
				g.state.Ended, g.state.EndedBy = true, domain.TypeGrantRevoked
			}
		case *domain.GrantExpired:
			if g := grants[e.GrantID]; g != nil && !g.state.Ended {
				g.state.Ended, g.state.EndedBy = true, domain.TypeGrantExpired
			}
		case *domain.AccessKeyIssued:
			keys[e.KeyID] = &keyFact{id: e.KeyID, selector: e.Selector, key: Key{IssuedBy: e.IssuedBy, ExpiresAt: e.ExpiresAt.UTC(), CIDRs: e.CIDRs, Event: refOf(r, false)}}
			keyOrder = append(keyOrder, e.KeyID)
		case *domain.AccessKeyRevoked:
			if k := keys[e.KeyID]; k != nil {
				k.revoked = true
			}
		case *domain.UserDeleted:
			if err := f.deleted(e, r); err != nil {
				return fmt.Errorf("replay: %w", err)
			}
		}
	}
	for _, id := range order {
		f.grants = append(f.grants, *grants[id])
	}
	for _, id := range keyOrder {
		f.keys = append(f.keys, *keys[id])
	}
	return nil
}

// refOf names a record; withIDs adds its event id and causation id.
func refOf(r eventstore.Record, withIDs bool) Ref {
	ref := Ref{Type: r.Type, Position: r.Position, RecordedAt: r.RecordedAt.UTC()}
	if withIDs {
		ref.EventID = r.EventID.String()
		var m domain.Metadata
		if json.Unmarshal(r.Metadata, &m) == nil {
			ref.CausationID = m.CausationID
		}
	}
	return ref
}

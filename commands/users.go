package commands

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// DeleteUser removes a user from an organization (OrgID domain.PlatformOrg: from every
// organization and the platform): user.deleted, and in the same append a role.unassigned for each
// of the user's roles there, a grant.revoked for each grant made to the user by name on its
// tunnels, an access.denied for each of the user's pending requests and an access_key.revoked for
// each access key the user issued there that is still valid, each with the deletion as its cause. Nodes cut the user's live calls there and refuse the user's tokens issued before it.
type DeleteUser struct {
	OrgID  string `json:"org_id"`
	UserID string `json:"user_id"`
	Reason string `json:"reason"`
}

func (DeleteUser) CommandName() string { return "DeleteUser" }

// Permission: an organization's role administrators (owners and admins); everywhere, superadmins.
// Deleting a user who owns the organization needs what withdrawing owner needs (deleteUser checks).
func (c DeleteUser) Permission() Permission {
	if c.OrgID == domain.PlatformOrg {
		return Permission{Org: domain.PlatformOrg, Object: ObjRoles, Action: ActAssignOwner}
	}
	return Permission{Org: c.OrgID, Object: ObjRoles, Action: ActUnassign}
}

// MaxUserDeletionStreams bounds the aggregates one deletion changes (role streams, tunnels'
// sharing streams and access keys), far below the store's events per append.
const MaxUserDeletionStreams = 2000

// userFootprint finds the streams a deletion must look at, from the log itself (not a read model,
// which may lag): the role streams where the user was ever assigned a role, the sharing streams
// of tunnels where the user was ever granted by name or made a request, and the access keys the
// user issued, in the deletion's scope. Partial indexes of migrations 000021 and 000023 serve
// the lookups.
func (s *Service) userFootprint(ctx context.Context, org, user string) (roleOrgs []string, tunnels [][2]string, keys []string, err error) {
	const roles = `SELECT DISTINCT payload_json->>'org_id' FROM events
		WHERE type = 'role.assigned' AND payload_json->>'user_id' = $1 AND ($2 = '*' OR payload_json->>'org_id' = $2) LIMIT $3`
	const sharing = `SELECT DISTINCT org_id, tunnel_id FROM (
		SELECT payload_json->>'org_id' AS org_id, payload_json->>'tunnel_id' AS tunnel_id FROM events
			WHERE type = 'grant.created' AND payload_json->>'subject' = $1 AND payload_json->>'subject_kind' = 'user'
		UNION ALL
		SELECT payload_json->>'org_id', payload_json->>'tunnel_id' FROM events
			WHERE type = 'access.requested' AND payload_json->>'requester' = $1) f
		WHERE $2 = '*' OR org_id = $2 LIMIT $3`
	const issued = `SELECT DISTINCT payload_json->>'key_id' FROM events
		WHERE type = 'access_key.issued' AND payload_json->>'issued_by' = $1 AND ($2 = '*' OR payload_json->>'org_id' = $2) LIMIT $3`
	rows, err := s.cfg.Pool.Query(ctx, roles, user, org, MaxUserDeletionStreams+1)
	if err == nil {
		roleOrgs, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("find the user's roles: %w", err)
	}
	rows, err = s.cfg.Pool.Query(ctx, sharing, user, org, MaxUserDeletionStreams+1)
	if err == nil {
		tunnels, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
			var t [2]string
			err := r.Scan(&t[0], &t[1])
			return t, err
		})
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("find the user's grants and requests: %w", err)
	}
	rows, err = s.cfg.Pool.Query(ctx, issued, user, org, MaxUserDeletionStreams+1)
	if err == nil {
		keys, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("find the user's access keys: %w", err)
	}
	if len(roleOrgs)+len(tunnels)+len(keys) > MaxUserDeletionStreams {
		return nil, nil, nil, fmt.Errorf("delete user: %w: the user's roles, grants and access keys span more than %d organizations, tunnels and keys; delete the user organization by organization",
			domain.ErrInvalidState, MaxUserDeletionStreams)
	}
	return roleOrgs, tunnels, keys, nil
}

func (s *Service) deleteUser(ctx context.Context, c DeleteUser) (Result, error) {
	by := ActorFrom(ctx).ID
	// Validate before touching the database.
	if _, _, err := domain.DeleteUser(domain.UserDeletion{OrgID: c.OrgID, UserID: c.UserID, DeletedBy: by, Reason: c.Reason}); err != nil {
		return Result{}, err
	}
	if c.OrgID != domain.PlatformOrg {
		if err := s.requireOrg(ctx, c.OrgID); err != nil {
			return Result{}, err
		}
	}
	g := newIDGen(ctx, c.CommandName())
	deletionID := g.next()
	now := s.cfg.Now()
	return s.retryConflicts(ctx, false, func() (Result, error) {
		roleOrgs, tunnels, keys, err := s.userFootprint(ctx, c.OrgID, c.UserID)
		if err != nil {
			return Result{}, err
		}
		if len(roleOrgs) == 0 && len(tunnels) == 0 && len(keys) == 0 {
			return Result{}, fmt.Errorf("user %q: %w: the log holds no role, grant, access request or access key of theirs%s", c.UserID, domain.ErrNotFound, scopeText(c.OrgID))
		}
		in := domain.UserDeletion{OrgID: c.OrgID, UserID: c.UserID, DeletedBy: by, Reason: c.Reason}
		for _, o := range roleOrgs {
			recs, err := s.read(ctx, domain.RoleStream(o, c.UserID))
			if err != nil {
				return Result{}, err
			}
			ra, err := domain.RehydrateRoleAssignment(o, c.UserID, recs)
			if err != nil {
				return Result{}, err
			}
			if c.OrgID != domain.PlatformOrg && o == c.OrgID && slices.Contains(ra.Roles(), domain.RoleOwner) {
				// Withdrawing owner takes an owner (or a superadmin), as UnassignRole does.
				if err := s.authz.Check(ctx, Permission{Org: o, Object: ObjRoles, Action: ActAssignOwner}); err != nil {
					return Result{}, err
				}
			}
			in.Roles = append(in.Roles, ra)
		}
		for _, t := range tunnels {
			recs, err := s.read(ctx, domain.SharingStream(t[1]))
			if err != nil {
				return Result{}, err
			}
			sh, err := domain.RehydrateSharing(t[0], t[1], recs)
			if err != nil {
				return Result{}, err
			}
			in.Sharing = append(in.Sharing, sh)
		}
		for _, id := range keys {
			recs, err := s.read(ctx, domain.AccessKeyStream(id))
			if err != nil {
				return Result{}, err
			}
			k, err := domain.RehydrateAccessKey(recs)
			if err != nil {
				return Result{}, err
			}
			in.AccessKeys = append(in.AccessKeys, k)
		}
		ev, changes, err := domain.DeleteUser(in)
		if err != nil {
			return Result{}, err
		}
		recs, err := s.read(ctx, domain.UserStream(c.UserID))
		if err != nil {
			return Result{}, err
		}
		var version uint64
		if n := len(recs); n > 0 {
			version = recs[n-1].StreamVersion
		}
		own, err := events(g, causedBy(ctx, c.CommandName(), c.OrgID, now, ""), ev)
		if err != nil {
			return Result{}, err
		}
		own[0].ID = deletionID // drawn before the retries: the caused events name it
		caused := causedBy(ctx, c.CommandName(), c.OrgID, now, deletionID.String())
		appends := []eventstore.StreamAppend{{StreamID: domain.UserStream(c.UserID), Expected: eventstore.Exact(version), Events: own}}
		for _, ch := range changes {
			data, err := events(g, caused, ch.Events...)
			if err != nil {
				return Result{}, err
			}
			appends = append(appends, eventstore.StreamAppend{StreamID: ch.Stream, Expected: eventstore.Exact(ch.Version), Events: data})
		}
		result := func(res []eventstore.AppendResult) Result {
			return Result{ID: c.UserID, Position: res[len(res)-1].LastPosition, Version: res[0].StreamVersion}
		}
		res, err := s.appendMulti(ctx, recordWith(ctx, result), appends...)
		if err != nil {
			return Result{}, err
		}
		return result(res), nil
	})
}

func scopeText(org string) string {
	if org == domain.PlatformOrg {
		return ""
	}
	return " in organization " + org
}

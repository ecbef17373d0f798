package commands

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/casbin/casbin/v2"
	"github.com/casbin/casbin/v2/model"
	"github.com/casbin/casbin/v2/persist"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// rbacModel is RBAC with domains (organizations). Role permissions below apply in every
// organization (p.dom "*"); a user's roles hold only in the organization they were granted in.
// Superadmins (role superadmin in PlatformOrg) may do everything.
const rbacModel = `
[request_definition]
r = sub, dom, obj, act

[policy_definition]
p = sub, dom, obj, act

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, "superadmin", "*") || (r.dom != "*" && g(r.sub, p.sub, r.dom) && p.dom == "*" && r.obj == p.obj && r.act == p.act)
`

// rolePermissions is the static part of the policy: what each organization role may do. On
// tunnels the roles hold read, write (create, update), delete and share (grants, the access
// policy, access keys): owner and admin all four, operator all but share of grants (it keeps the
// agent tokens and access keys it held before roles had names), editor read and write, viewer and
// auditor read. Calling a tunnel (ActUse) is no role's: domain.MayUseTunnel or a grant decides it.
var rolePermissions = map[domain.Role][][2]string{
	domain.RoleOwner: {
		{ObjOrgs, ActRead}, {ObjTunnels, ActCreate}, {ObjTunnels, ActRead}, {ObjTunnels, ActUpdate}, {ObjTunnels, ActDelete}, {ObjTunnels, ActShare},
		{ObjTokens, ActIssue}, {ObjTokens, ActRead}, {ObjTokens, ActRevoke},
		{ObjAccessKeys, ActIssue}, {ObjAccessKeys, ActRead}, {ObjAccessKeys, ActRevoke},
		{ObjAccessRequests, ActCreate}, {ObjAccessRequests, ActRead},
		{ObjRoles, ActAssign}, {ObjRoles, ActAssignOwner}, {ObjRoles, ActUnassign}, {ObjRoles, ActRead}, {ObjAudit, ActRead},
		{ObjSIEM, ActCreate}, {ObjSIEM, ActRead}, {ObjSIEM, ActUpdate}, {ObjSIEM, ActDelete}, {ObjSIEM, ActSkip},
		{ObjWebhooks, ActCreate}, {ObjWebhooks, ActRead}, {ObjWebhooks, ActUpdate}, {ObjWebhooks, ActDelete}, {ObjWebhooks, ActRotate},
		{ObjAnalytics, ActRead}, {ObjAnalytics, ActUpdate},
	},
	domain.RoleAdmin: {
		{ObjOrgs, ActRead}, {ObjTunnels, ActCreate}, {ObjTunnels, ActRead}, {ObjTunnels, ActUpdate}, {ObjTunnels, ActDelete}, {ObjTunnels, ActShare},
		{ObjTokens, ActIssue}, {ObjTokens, ActRead}, {ObjTokens, ActRevoke},
		{ObjAccessKeys, ActIssue}, {ObjAccessKeys, ActRead}, {ObjAccessKeys, ActRevoke},
		{ObjAccessRequests, ActCreate}, {ObjAccessRequests, ActRead},
		{ObjRoles, ActAssign}, {ObjRoles, ActUnassign}, {ObjRoles, ActRead}, {ObjAudit, ActRead},
		{ObjSIEM, ActCreate}, {ObjSIEM, ActRead}, {ObjSIEM, ActUpdate}, {ObjSIEM, ActDelete}, {ObjSIEM, ActSkip},
		{ObjWebhooks, ActCreate}, {ObjWebhooks, ActRead}, {ObjWebhooks, ActUpdate}, {ObjWebhooks, ActDelete}, {ObjWebhooks, ActRotate},
		{ObjAnalytics, ActRead}, {ObjAnalytics, ActUpdate},
	},
	domain.RoleOperator: {
		{ObjOrgs, ActRead}, {ObjTunnels, ActCreate}, {ObjTunnels, ActRead}, {ObjTunnels, ActUpdate}, {ObjTunnels, ActDelete},
		{ObjTokens, ActIssue}, {ObjTokens, ActRead}, {ObjTokens, ActRevoke},
		{ObjAccessKeys, ActIssue}, {ObjAccessKeys, ActRead}, {ObjAccessKeys, ActRevoke},
		{ObjAccessRequests, ActCreate}, {ObjAccessRequests, ActRead},
	},
	domain.RoleEditor: {
		{ObjOrgs, ActRead}, {ObjTunnels, ActCreate}, {ObjTunnels, ActRead}, {ObjTunnels, ActUpdate},
		{ObjTokens, ActIssue}, {ObjTokens, ActRead}, {ObjTokens, ActRevoke}, {ObjAccessKeys, ActRead},
		{ObjAccessRequests, ActCreate}, {ObjAccessRequests, ActRead},
	},
	domain.RoleViewer: {
		{ObjOrgs, ActRead}, {ObjTunnels, ActRead}, {ObjTokens, ActRead}, {ObjAccessKeys, ActRead},
		{ObjAccessRequests, ActCreate}, {ObjAccessRequests, ActRead},
	},
	domain.RoleAuditor: {
		{ObjOrgs, ActRead}, {ObjTunnels, ActRead}, {ObjTokens, ActRead}, {ObjAccessKeys, ActRead}, {ObjRoles, ActRead}, {ObjAudit, ActRead}, {ObjSIEM, ActRead},
		{ObjAnalytics, ActRead},
		{ObjAccessRequests, ActRead},
	},
}

// casbinUser names a user in the policy apart from the roles: casbin's role links hold between a
// name and itself, so a user whose id was a role's name ("superadmin", "owner") would otherwise
// hold that role everywhere without a grant.
func casbinUser(id string) string { return "user:" + id }

// ErrPolicyReadOnly: the policy changes only through role events.
var ErrPolicyReadOnly = errors.New("the authorization policy is read-only: it changes only through role events")

// viewAdapter is a read-only casbin adapter over the role_assignments view (the RBAC projection).
type viewAdapter struct {
	pool *pgxpool.Pool
}

func (a viewAdapter) LoadPolicy(m model.Model) error {
	for role, perms := range rolePermissions {
		for _, p := range perms {
			if err := persist.LoadPolicyArray([]string{"p", string(role), "*", p[0], p[1]}, m); err != nil {
				return err
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := a.pool.Query(ctx, `SELECT user_id, role, org_id FROM role_assignments`)
	if err != nil {
		return fmt.Errorf("load rbac view: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var user, role, org string
		if err := rows.Scan(&user, &role, &org); err != nil {
			return err
		}
		if err := persist.LoadPolicyArray([]string{"g", casbinUser(user), role, org}, m); err != nil {
			return err
		}
	}
	return rows.Err()
}

func (viewAdapter) SavePolicy(model.Model) error                { return ErrPolicyReadOnly }
func (viewAdapter) AddPolicy(string, string, []string) error    { return ErrPolicyReadOnly }
func (viewAdapter) RemovePolicy(string, string, []string) error { return ErrPolicyReadOnly }
func (viewAdapter) RemoveFilteredPolicy(string, string, int, ...string) error {
	return ErrPolicyReadOnly
}

// Authorizer decides permissions with casbin over the RBAC view.
type Authorizer struct {
	enforcer *casbin.SyncedEnforcer
	position func() int64
	wait     func(ctx context.Context, pos uint64) error
	store    *eventstore.Store
	auditor  *Auditor
	log      *slog.Logger

	mu     sync.Mutex
	loaded int64 // RBAC projection position the policy was loaded at; -2 never

	// decisions caches Enforce results for the loaded policy (casbin's matcher evaluation is
	// the costliest part of a request); a reload clears it.
	cacheMu   sync.RWMutex
	decisions map[decisionKey]bool
}

type decisionKey struct{ sub, dom, obj, act string }

// maxDecisions bounds the cache; beyond it the cache starts over.
const maxDecisions = 100_000

func (a *Authorizer) enforce(sub string, p Permission) (bool, error) {
	k := decisionKey{sub, p.Org, p.Object, p.Action}
	a.cacheMu.RLock()
	ok, hit := a.decisions[k]
	a.cacheMu.RUnlock()
	if hit {
		return ok, nil
	}
	ok, err := a.enforcer.Enforce(casbinUser(sub), p.Org, p.Object, p.Action)
	if err != nil {
		return false, err
	}
	a.cacheMu.Lock()
	if len(a.decisions) >= maxDecisions {
		a.decisions = map[decisionKey]bool{}
	}
	a.decisions[k] = ok
	a.cacheMu.Unlock()
	return ok, nil
}

func newAuthorizer(pool *pgxpool.Pool, position func() int64, wait func(context.Context, uint64) error, store *eventstore.Store, auditor *Auditor, log *slog.Logger) *Authorizer {
	m, err := model.NewModelFromString(rbacModel)
	if err != nil {
		panic(fmt.Sprintf("rbac model: %v", err)) // a constant; a failure is a programming error
	}
	e, err := casbin.NewSyncedEnforcer(m)
	if err != nil {
		panic(fmt.Sprintf("rbac enforcer: %v", err))
	}
	e.SetAdapter(viewAdapter{pool: pool})
	e.EnableAutoSave(false)
	return &Authorizer{enforcer: e, position: position, wait: wait, store: store, auditor: auditor, log: log, loaded: -2}
}

// refresh reloads the policy when the RBAC view moved since the last load (or always when force).
func (a *Authorizer) refresh(force bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	pos := int64(-1)
	if a.position != nil {
		pos = a.position()
	}
	if !force && a.loaded != -2 && (a.position == nil || pos == a.loaded) {
		return nil
	}
	if err := a.enforcer.LoadPolicy(); err != nil {
		return fmt.Errorf("authorization policy: %w", err)
	}
	a.cacheMu.Lock()
	a.decisions = map[decisionKey]bool{}
	a.cacheMu.Unlock()
	a.loaded = pos
	return nil
}

// Allowed reports whether actor may perform perm, with the freshest policy this process has.
func (a *Authorizer) Allowed(ctx context.Context, actor string, perm Permission) (bool, error) {
	return a.allowedBy(ctx, actor, func() (bool, error) { return a.enforce(actor, perm) })
}

// allowedBy evaluates decide on the loaded policy, the freshest this process has. A denial is
// evaluated again once the RBAC view has caught up with the log.
func (a *Authorizer) allowedBy(ctx context.Context, actor string, decide func() (bool, error)) (bool, error) {
	if actor == "" {
		return false, ErrUnauthenticated
	}
	if err := a.refresh(false); err != nil {
		return false, err
	}
	ok, err := decide()
	if err != nil || ok {
		return ok, err
	}
	// Denied: make sure the denial is not an artefact of a role granted a moment ago that the
	// RBAC view has not applied yet (read your own writes across requests).
	if a.wait != nil && a.store != nil {
		// The head from the database: the grant may have been written by another process
		// (`admin token create`) whose notification has not arrived yet.
		head, herr := a.store.Head(ctx)
		if herr != nil {
			head = a.store.KnownHead()
		}
		if head > 0 && (a.position == nil || a.position() < int64(head)-1) {
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := a.wait(wctx, head-1)
			cancel()
			if err != nil && ctx.Err() == nil {
				a.log.Warn("authorization: the RBAC view is behind the log", "error", err)
			}
		}
	}
	if err := a.refresh(a.position == nil); err != nil {
		return false, err
	}
	return decide()
}

// Check returns nil when the actor in ctx may perform perm; otherwise ErrForbidden (recorded in
// the audit log, aggregated per actor per window) or ErrUnauthenticated.
func (a *Authorizer) Check(ctx context.Context, perm Permission) error {
	return a.check(ctx, perm, perm.Action+" "+perm.Object, func(actor string) (bool, error) { return a.enforce(actor, perm) })
}

// CheckTunnelUse returns nil when the actor in ctx may use tunnel tunnelID of org, owned by
// owner, by domain.MayUseTunnel: the rule a node applies to callers of the tunnel, here applied to
// whoever issues or revokes its agent tokens. Otherwise ErrForbidden, recorded in the audit log
// as a denied tunnels:use in org (the path of every denial), or ErrUnauthenticated.
func (a *Authorizer) CheckTunnelUse(ctx context.Context, org, tunnelID, owner string) error {
	perm := Permission{Org: org, Object: ObjTunnels, Action: ActUse}
	return a.check(ctx, perm, "use tunnel "+tunnelID, func(actor string) (bool, error) {
		superadmin := a.rolesIn(actor, domain.PlatformOrg)[domain.RoleSuperadmin]
		return domain.MayUseTunnel(actor, owner, a.rolesIn(actor, org), superadmin), nil
	})
}

// CheckOrgTunnelUse returns nil when the actor in ctx may use every tunnel of org, those created
// later included (domain.MayUseTunnel with no owner: the org's owners and admins, superadmins),
// as CheckTunnelUse otherwise. Issuing a key scoped by labels needs it: the key calls whatever
// tunnel is labelled to match later.
func (a *Authorizer) CheckOrgTunnelUse(ctx context.Context, org string) error {
	perm := Permission{Org: org, Object: ObjTunnels, Action: ActUse}
	return a.check(ctx, perm, "use every tunnel", func(actor string) (bool, error) {
		superadmin := a.rolesIn(actor, domain.PlatformOrg)[domain.RoleSuperadmin]
		return domain.MayUseTunnel(actor, "", a.rolesIn(actor, org), superadmin), nil
	})
}

// check is the one path of a denial: decided with the freshest policy, recorded in the audit log
// as perm, answered with ErrForbidden naming what (never more than the request itself named).
func (a *Authorizer) check(ctx context.Context, perm Permission, what string, decide func(actor string) (bool, error)) error {
	actor := ActorFrom(ctx)
	ok, err := a.allowedBy(ctx, actor.ID, func() (bool, error) { return decide(actor.ID) })
	if err != nil {
		return err
	}
	if !ok {
		a.auditor.Denied(actor, perm)
		return fmt.Errorf("%w: %s may not %s in %s", ErrForbidden, actor.ID, what, orgLabel(perm.Org))
	}
	return nil
}

// rolesIn returns the roles user holds in org by the loaded policy (PlatformOrg: superadmin).
func (a *Authorizer) rolesIn(user, org string) map[domain.Role]bool {
	out := map[domain.Role]bool{}
	for _, r := range a.enforcer.GetRolesForUserInDomain(casbinUser(user), org) {
		out[domain.Role(r)] = true
	}
	return out
}

// OrgsOf lists the organizations where user holds any role.
func (a *Authorizer) OrgsOf(user string) ([]string, error) {
	if err := a.refresh(false); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	rules, err := a.enforcer.GetFilteredGroupingPolicy(0, casbinUser(user))
	if err != nil {
		return nil, err
	}
	for _, r := range rules {
		if len(r) == 3 && r[2] != domain.PlatformOrg && !seen[r[2]] {
			seen[r[2]] = true
			out = append(out, r[2])
		}
	}
	return out, nil
}

func orgLabel(org string) string {
	if org == domain.PlatformOrg {
		return "the platform"
	}
	return "organization " + org
}

func authorized[C Command](s *Service, next Handler[C]) Handler[C] {
	return HandlerFunc[C](func(ctx context.Context, cmd C) (Result, error) {
		if err := s.authz.Check(ctx, cmd.Permission()); err != nil {
			return Result{}, err
		}
		return next.Handle(ctx, cmd)
	})
}

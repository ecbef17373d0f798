package commands

import (
	"context"
	"errors"
	"fmt"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// CreateOrganization makes a tenant; Owner, when set, becomes its first owner.
type CreateOrganization struct {
	Name  string `json:"name"`
	Owner string `json:"owner,omitempty"`
}

func (CreateOrganization) CommandName() string { return "CreateOrganization" }
func (CreateOrganization) Permission() Permission {
	return Permission{Org: domain.PlatformOrg, Object: ObjOrgs, Action: ActCreate}
}

func (s *Service) createOrganization(ctx context.Context, c CreateOrganization) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	orgID := g.next().String()
	meta := metadata(ctx, c.CommandName(), orgID, s.cfg.Now())
	res, err := s.decideAndAppend(ctx, g, meta, failOnConflict, func() (decision, error) {
		created, reserved, err := domain.CreateOrganization(orgID, c.Name, orDefault(ActorFrom(ctx).ID, "system"))
		if err != nil {
			return decision{}, err
		}
		d := changed(orgID, domain.OrgStream(orgID), 0, created).
			and(domain.OrgNameStream(c.Name), 0, reserved)
		if c.Owner != "" {
			ra, err := domain.RehydrateRoleAssignment(orgID, c.Owner, nil)
			if err != nil {
				return decision{}, err
			}
			assigned, err := ra.Assign(domain.RoleOwner)
			if err != nil {
				return decision{}, err
			}
			d = d.and(domain.RoleStream(orgID, c.Owner), 0, assigned)
		}
		return d, nil
	})
	var wrong *eventstore.WrongExpectedVersionError
	if errors.As(err, &wrong) && wrong.StreamID == domain.OrgNameStream(c.Name) {
		return Result{}, fmt.Errorf("create organization: %w: the name %q is taken", domain.ErrConflict, c.Name)
	}
	return res, err
}

// requireOrg fails with ErrNotFound unless the organization exists.
func (s *Service) requireOrg(ctx context.Context, orgID string) error {
	if !domain.ValidID(orgID) {
		return fmt.Errorf("organization %q: %w", orgID, domain.ErrNotFound)
	}
	recs, err := s.store.ReadStream(ctx, domain.OrgStream(orgID), 1, 1)
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		return fmt.Errorf("organization %s: %w", orgID, domain.ErrNotFound)
	}
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

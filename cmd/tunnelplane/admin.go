package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/user"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
)

// maxUserTokenTTL bounds `admin token create --ttl`.
const maxUserTokenTTL = 90 * 24 * time.Hour

func newAdminCommand(g *globals) *cobra.Command {
	a := &adminClient{g: g}
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Operate the control plane: bootstrap tokens offline, everything else through the REST API",
		Long: `admin token create works offline against the database and the data dir (it bootstraps a fresh
install). Every other admin command calls the REST admin API at --api-url with the bearer token
--token; it prints a table, or the API's JSON with --json, and exits non-zero with the problem
detail when the API refuses.`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&a.baseURL, "api-url", envDefault("API_URL", "http://"+controlapp.DefaultAPIAddr), "admin API base URL (env TUNNELPLANE_API_URL)")
	secretFlag(pf, &a.token, "token", "TOKEN", "bearer token")
	pf.BoolVar(&a.asJSON, "json", false, "print the API's JSON")
	pf.StringVar(&a.idemKey, "idempotency-key", "", "Idempotency-Key for a command: a retry with the same key does not repeat it")
	cmd.AddCommand(newAdminTokenCommand(g), a.orgsCommand(), a.tunnelsCommand(), a.nodesCommand(), a.tokensCommand(), a.accessKeysCommand(), a.grantsCommand(), a.accessRequestsCommand(), a.accessCommand(), a.rolesCommand(),
		a.keysCommand(), a.auditCommand(), a.siemCommand(), a.webhooksCommand(), a.analyticsCommand(), a.subjectsCommand(), a.reportSchedulesCommand(), a.usersCommand())
	cmd.AddCommand(a.exportsCommand())
	return cmd
}

func newAdminTokenCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "User tokens for the admin API"}
	var org, subject, role string
	var groups []string
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create",
		Short: "Grant a role and mint a user token (offline: database and data dir); the token is the last line",
		Long: `token create works against the database and the data dir directly, without a running control
plane: it makes sure USER holds ROLE (in --org, or platform-wide for --role superadmin), recording
the grant as an event by "cli:<os user>", and prints a token signed with the control plane's token
key. The token is the last line of the output:

  TOKEN=$(tunnelplane admin token create --user root --role superadmin | tail -1)

--org accepts the organization's name or id; creating an organization needs a superadmin token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if subject == "" {
				return errors.New("--user is required")
			}
			r := domain.Role(role)
			switch {
			case role == "":
				return errors.New("--role is required (owner, admin, operator, editor, viewer, auditor or superadmin)")
			case r == domain.RoleSuperadmin && org != "":
				return errors.New("--role superadmin is platform-wide: leave out --org")
			case r != domain.RoleSuperadmin && org == "":
				return fmt.Errorf("--org is required for --role %s", role)
			case r != domain.RoleSuperadmin && !domain.ValidRole(org, r):
				return fmt.Errorf("--role %q: want owner, admin, operator, editor, viewer, auditor or superadmin", role)
			case ttl <= 0 || ttl > maxUserTokenTTL:
				return fmt.Errorf("--ttl %s: want more than 0 and at most %s", ttl, maxUserTokenTTL)
			}
			for _, gr := range groups {
				if err := domain.CheckGroup(gr); err != nil {
					return fmt.Errorf("--group %q: %w", gr, err)
				}
			}
			return createUserToken(cmd.Context(), g, org, subject, r, groups, ttl)
		},
	}
	f := create.Flags()
	f.StringVar(&org, "org", "", "organization name or id (not for superadmin)")
	f.StringVar(&subject, "user", "", "user id (the token's subject)")
	f.StringVar(&role, "role", "", "owner, admin, operator, editor, viewer, auditor or superadmin")
	f.DurationVar(&ttl, "ttl", 12*time.Hour, "token lifetime")
	f.StringSliceVar(&groups, "group", nil, "a group for the token's groups claim, as an identity provider would list it (repeat or comma-separate)")
	cmd.AddCommand(create)
	return cmd
}

// cliActor is who the offline admin commands act as, for the audit log.
func cliActor() string {
	name := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	return "cli:" + name
}

func createUserToken(ctx context.Context, g *globals, org, subject string, role domain.Role, groups []string, ttl time.Duration) error {
	h, err := openLog(ctx, g, 4)
	if err != nil {
		return err
	}
	defer h.Close()
	svc, err := controlapp.NewService(h, nil, 0, g.log)
	if err != nil {
		return err
	}
	defer svc.Stop()
	orgID, orgName := domain.PlatformOrg, "the platform"
	if org != "" {
		if orgID, err = resolveOrgOffline(ctx, h, org); err != nil {
			return err
		}
		orgName = "organization " + orgID
	}
	actx := commands.WithActor(ctx, commands.Actor{ID: cliActor()})
	res, err := svc.GrantDirect(actx, commands.AssignRole{OrgID: orgID, UserID: subject, Role: role})
	if err != nil {
		return fmt.Errorf("grant %s to %s: %w", role, subject, err)
	}
	key, err := svc.EnsureTokenKey(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	raw, err := token.MintUserInGroups(key, token.DefaultIssuer, subject, "", groups, ttl, now)
	if err != nil {
		return err
	}
	state := fmt.Sprintf("granted at position %d", res.Position)
	if res.Noop {
		state = "already held"
	}
	fmt.Fprintf(g.stdout, "role:    %s of %s for %s (%s)\n", role, orgName, subject, state)
	fmt.Fprintf(g.stdout, "key:     %s\n", key.ID())
	fmt.Fprintf(g.stdout, "expires: %s\n", now.Add(ttl).UTC().Format(time.RFC3339))
	fmt.Fprintln(g.stdout, raw)
	return nil
}

// resolveOrgOffline maps an organization name or id to its id from the log itself (the name
// reservation stream), which is authoritative even when no projection runs.
func resolveOrgOffline(ctx context.Context, h *controlapp.Log, ref string) (string, error) {
	if domain.ValidID(ref) {
		recs, err := h.Store.ReadStream(ctx, domain.OrgStream(ref), 1, 1)
		if err != nil {
			return "", err
		}
		if len(recs) == 0 {
			return "", fmt.Errorf("organization %s: %w", ref, domain.ErrNotFound)
		}
		return ref, nil
	}
	recs, err := h.Store.ReadStream(ctx, domain.OrgNameStream(ref), 1, 1)
	if err != nil {
		return "", err
	}
	if len(recs) == 0 {
		return "", fmt.Errorf("organization %q: %w (create it with `tunnelplane admin orgs create %s` and a superadmin token)", ref, domain.ErrNotFound, ref)
	}
	var p domain.OrgNameReserved
	if err := json.Unmarshal(recs[0].Payload, &p); err != nil {
		return "", fmt.Errorf("organization %q: %w", ref, err)
	}
	return p.OrgID, nil
}

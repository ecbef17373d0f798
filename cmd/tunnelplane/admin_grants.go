package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/domain"
)

// grantsCommand: grants of a tunnel's use to a user or a group, and the tunnel's access policy.
func (a *adminClient) grantsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "grants", Short: "Grants of a tunnel's use to a user or a group (with an expiry), and its access policy"}
	var org, tunnel, user, group, ttl, reason, state, role string
	var approvals int
	cmd.PersistentFlags().StringVar(&org, "org", "", "organization name or id (default: your only one)")
	cmd.PersistentFlags().StringVar(&tunnel, "tunnel", "", "the tunnel (id or name)")
	_ = cmd.MarkPersistentFlagRequired("tunnel")
	create := &cobra.Command{
		Use: "create", Short: "Grant --user or --group the use of --tunnel for --ttl", Args: cobra.NoArgs,
		Long: `Grant a user, or every user whose token's groups claim carries --group, the right to call
--tunnel through the nodes until the grant expires (or is revoked).`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (user == "") == (group == "") {
				return fmt.Errorf("name exactly one of --user and --group")
			}
			id, err := a.tunnelID(cmd.Context(), org, tunnel)
			if err != nil {
				return err
			}
			_, err = a.write(cmd.Context(), "created grant", http.MethodPost, "/api/v1/tunnels/"+id+"/grants", orgQuery(org),
				api.GrantInput{User: user, Group: group, TTL: ttl})
			return err
		},
	}
	create.Flags().StringVar(&user, "user", "", "the user (id) to grant")
	create.Flags().StringVar(&group, "group", "", "the group (of the identity provider's groups claim) to grant")
	create.Flags().StringVar(&ttl, "ttl", "", "lifetime like 8h or 7d (at most 365d)")
	_ = create.MarkFlagRequired("ttl")
	list := &cobra.Command{
		Use: "list", Short: "The tunnel's access policy and grants", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			id, err := a.tunnelID(cmd.Context(), org, tunnel)
			if err != nil {
				return err
			}
			q := orgQuery(org)
			if state != "" {
				q.Set("state", state)
			}
			var g api.Grants
			raw, err := a.get(cmd.Context(), "/api/v1/tunnels/"+id+"/grants", q, &g)
			if err != nil {
				return err
			}
			if a.asJSON {
				_, err = fmt.Fprintln(cmd.OutOrStdout(), strings.TrimSpace(string(raw)))
				return err
			}
			if _, err := fmt.Fprintf(cmd.OutOrStdout(), "policy: %d approval(s) from %s\n", g.Policy.RequiredApprovals, g.Policy.ApproverRole); err != nil {
				return err
			}
			rows := make([][]string, len(g.Items))
			for i, gr := range g.Items {
				rows[i] = []string{gr.ID, gr.SubjectKind + ":" + gr.Subject, gr.State, short(gr.ExpiresAt), gr.GrantedBy, gr.RequestID}
			}
			return a.table(g.Items, "ID\tSUBJECT\tSTATE\tEXPIRES\tGRANTED BY\tREQUEST", rows)
		},
	}
	list.Flags().StringVar(&state, "state", "", "active (default) or all")
	revoke := &cobra.Command{
		Use: "revoke GRANT_ID", Short: "Revoke a grant: nodes refuse its callers as soon as the revocation reaches them", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.tunnelID(cmd.Context(), org, tunnel)
			if err != nil {
				return err
			}
			q := orgQuery(org)
			if reason != "" {
				q.Set("reason", reason)
			}
			_, err = a.write(cmd.Context(), "revoked grant", http.MethodDelete, "/api/v1/tunnels/"+id+"/grants/"+url.PathEscape(args[0]), q, nil)
			return err
		},
	}
	revoke.Flags().StringVar(&reason, "reason", "", "recorded in the event")
	policy := &cobra.Command{
		Use: "policy", Short: "Set how many approvals (--approvals N) from which --role the tunnel's access requests need", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			id, err := a.tunnelID(cmd.Context(), org, tunnel)
			if err != nil {
				return err
			}
			_, err = a.write(cmd.Context(), "set access policy", http.MethodPut, "/api/v1/tunnels/"+id+"/access-policy", orgQuery(org),
				api.AccessPolicyInput{ApproverRole: domain.Role(role), RequiredApprovals: approvals})
			return err
		},
	}
	policy.Flags().StringVar(&role, "role", string(domain.DefaultAccessPolicy.ApproverRole), "the approvers' role (owners and superadmins count too)")
	policy.Flags().IntVar(&approvals, "approvals", domain.DefaultAccessPolicy.RequiredApprovals, "approvals needed, 1 to 10")
	cmd.AddCommand(create, list, revoke, policy)
	return cmd
}

// accessRequestsCommand: requests for the use of a tunnel, and their approval or denial.
func (a *adminClient) accessRequestsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "access-requests", Short: "Ask for the use of a tunnel; approve or deny others' requests"}
	var org, tunnel, duration, reason, comment, state string
	cmd.PersistentFlags().StringVar(&org, "org", "", "organization name or id (default: your only one)")
	create := &cobra.Command{
		Use: "create", Short: "Ask for the use of --tunnel for --duration, giving --reason", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			id, err := a.tunnelID(cmd.Context(), org, tunnel)
			if err != nil {
				return err
			}
			_, err = a.write(cmd.Context(), "requested access", http.MethodPost, "/api/v1/access-requests", nil,
				api.AccessRequestInput{Org: org, TunnelID: id, Duration: duration, Reason: reason})
			return err
		},
	}
	create.Flags().StringVar(&tunnel, "tunnel", "", "the tunnel (id or name)")
	create.Flags().StringVar(&duration, "duration", "", "how long, like 8h or 7d (at most 90d)")
	create.Flags().StringVar(&reason, "reason", "", "why (required)")
	for _, f := range []string{"tunnel", "duration", "reason"} {
		_ = create.MarkFlagRequired(f)
	}
	list := &cobra.Command{
		Use: "list", Short: "List access requests", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := orgQuery(org)
			if state != "" {
				q.Set("state", state)
			}
			if tunnel != "" {
				id, err := a.tunnelID(cmd.Context(), org, tunnel)
				if err != nil {
					return err
				}
				q.Set("tunnel_id", id)
			}
			items, err := listAll[api.AccessRequest](cmd.Context(), a, "/api/v1/access-requests", q, 0)
			if err != nil {
				return err
			}
			names, err := a.tunnelNames(cmd.Context(), org, len(items))
			if err != nil {
				return err
			}
			rows := make([][]string, len(items))
			for i, r := range items {
				rows[i] = []string{r.ID, names.of(r.TunnelID), r.Requester, r.State, fmt.Sprint(r.DurationSeconds) + "s", strings.Join(r.Approvers, ","), r.Reason}
			}
			return a.table(items, "ID\tTUNNEL\tREQUESTER\tSTATE\tDURATION\tAPPROVED BY\tREASON", rows)
		},
	}
	list.Flags().StringVar(&tunnel, "tunnel", "", "only this tunnel's (id or name)")
	list.Flags().StringVar(&state, "state", "", "pending, approved, denied or all (default)")
	approve := &cobra.Command{
		Use: "approve ID", Short: "Approve a request (the approval that completes the tunnel's policy creates the grant)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := a.write(cmd.Context(), "approved", http.MethodPost, "/api/v1/access-requests/"+url.PathEscape(args[0])+"/approve", orgQuery(org),
				api.AccessDecisionInput{Comment: comment})
			return err
		},
	}
	approve.Flags().StringVar(&comment, "comment", "", "recorded with the approval")
	deny := &cobra.Command{
		Use: "deny ID", Short: "Deny a request, giving --reason", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := a.write(cmd.Context(), "denied", http.MethodPost, "/api/v1/access-requests/"+url.PathEscape(args[0])+"/deny", orgQuery(org),
				api.AccessDecisionInput{Reason: reason})
			return err
		},
	}
	deny.Flags().StringVar(&reason, "reason", "", "why (required)")
	_ = deny.MarkFlagRequired("reason")
	cmd.AddCommand(create, list, approve, deny)
	return cmd
}

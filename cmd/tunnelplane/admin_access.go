package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/api"
)

func (a *adminClient) nodesCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "nodes", Short: "Data-plane nodes (superadmin)"}
	var state, reason string
	list := &cobra.Command{
		Use: "list", Short: "List nodes", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if state != "" {
				q.Set("state", state)
			}
			items, err := listAll[api.Node](cmd.Context(), a, "/api/v1/nodes", q, 0)
			if err != nil {
				return err
			}
			rows := make([][]string, len(items))
			for i, n := range items {
				health := ""
				switch {
				case n.Live != nil && *n.Live:
					health = "live"
				case n.Lost:
					health = "lost"
				case n.Live != nil:
					health = "silent"
				}
				rows[i] = []string{n.Name, n.ID, n.State, health, n.HostKeyFingerprint, n.AgentURL}
			}
			return a.table(items, "NAME\tID\tSTATE\tHEALTH\tHOST KEY\tAGENT URL", rows)
		},
	}
	list.Flags().StringVar(&state, "state", "", "joined, draining or left")
	drain := &cobra.Command{
		Use: "drain ID", Short: "Let a node's agents go and send it no new ones", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := a.write(cmd.Context(), "draining node", http.MethodPost, "/api/v1/nodes/"+url.PathEscape(args[0])+"/drain", nil, nil)
			return err
		},
	}
	remove := &cobra.Command{
		Use: "remove ID", Short: "Remove a node and revoke its event key", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			if reason != "" {
				q.Set("reason", reason)
			}
			_, err := a.write(cmd.Context(), "removed node", http.MethodDelete, "/api/v1/nodes/"+url.PathEscape(args[0]), q, nil)
			return err
		},
	}
	remove.Flags().StringVar(&reason, "reason", "", "recorded in the event")
	cmd.AddCommand(list, drain, remove, a.enrollmentTokensCommand())
	return cmd
}

func (a *adminClient) tokensCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "tokens", Short: "Agent tokens (credentials of tunnel agents)"}
	var org, ttl, tunnel, state, reason string
	cmd.PersistentFlags().StringVar(&org, "org", "", "organization name or id (default: your only one)")
	issue := &cobra.Command{
		Use: "issue TUNNEL", Short: "Issue an agent token for a tunnel (id or name); the token is the last line, shown once", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.tunnelID(cmd.Context(), org, args[0])
			if err != nil {
				return err
			}
			_, err = a.write(cmd.Context(), "issued token", http.MethodPost, "/api/v1/tunnels/"+id+"/tokens", orgQuery(org), api.TokenInput{TTL: ttl})
			return err
		},
	}
	issue.Flags().StringVar(&ttl, "ttl", "", "lifetime like 720h (default 30 days)")
	list := &cobra.Command{
		Use: "list", Short: "List agent tokens (records; never the tokens)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := a.credentialQuery(cmd.Context(), org, tunnel, state)
			if err != nil {
				return err
			}
			items, err := listAll[api.AgentToken](cmd.Context(), a, "/api/v1/tokens", q, 0)
			if err != nil {
				return err
			}
			names, err := a.tunnelNames(cmd.Context(), org, len(items))
			if err != nil {
				return err
			}
			rows := make([][]string, len(items))
			for i, t := range items {
				rows[i] = []string{t.ID, names.of(t.TunnelID), t.State, short(t.IssuedAt), short(t.ExpiresAt), t.IssuedBy}
			}
			return a.table(items, "ID\tTUNNEL\tSTATE\tISSUED\tEXPIRES\tISSUED BY", rows)
		},
	}
	list.Flags().StringVar(&tunnel, "tunnel", "", "only this tunnel's (id or name)")
	list.Flags().StringVar(&state, "state", "", "active, revoked, expired or all (default)")
	revoke := &cobra.Command{
		Use: "revoke ID", Short: "Revoke an agent token", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := orgQuery(org)
			if reason != "" {
				q.Set("reason", reason)
			}
			_, err := a.write(cmd.Context(), "revoked token", http.MethodDelete, "/api/v1/tokens/"+url.PathEscape(args[0]), q, nil)
			return err
		},
	}
	revoke.Flags().StringVar(&reason, "reason", "", "recorded in the event")
	cmd.AddCommand(issue, list, revoke)
	return cmd
}

func (a *adminClient) rolesCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "roles", Short: "Role assignments"}
	var org, user, role string
	cmd.PersistentFlags().StringVar(&org, "org", "", "organization name or id (default: your only one; \"*\" for platform roles)")
	assign := &cobra.Command{
		Use: "assign USER ROLE", Short: "Grant USER the ROLE (owner, admin, operator, viewer, auditor; superadmin platform-wide)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := a.write(cmd.Context(), "assigned "+args[1]+" to", http.MethodPost, "/api/v1/role-assignments", nil,
				api.RoleInput{Org: org, UserID: args[0], Role: args[1]})
			return err
		},
	}
	unassign := &cobra.Command{
		Use: "unassign USER ROLE", Short: "Withdraw a role", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := a.write(cmd.Context(), "withdrew "+args[1]+" from", http.MethodDelete,
				"/api/v1/role-assignments/"+url.PathEscape(args[0])+"/"+url.PathEscape(args[1]), orgQuery(org), nil)
			return err
		},
	}
	list := &cobra.Command{
		Use: "list", Short: "List role assignments", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := orgQuery(org)
			if user != "" {
				q.Set("user_id", user)
			}
			if role != "" {
				q.Set("role", role)
			}
			items, err := listAll[api.RoleAssignment](cmd.Context(), a, "/api/v1/role-assignments", q, 0)
			if err != nil {
				return err
			}
			rows := make([][]string, len(items))
			for i, r := range items {
				rows[i] = []string{r.UserID, r.Role, r.OrgID, short(r.AssignedAt)}
			}
			return a.table(items, "USER\tROLE\tORG\tASSIGNED", rows)
		},
	}
	list.Flags().StringVar(&user, "user", "", "only this user's")
	list.Flags().StringVar(&role, "role", "", "only this role")
	cmd.AddCommand(assign, unassign, list)
	return cmd
}

func (a *adminClient) keysCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Signing keys (superadmin)"}
	var purpose string
	rotate := &cobra.Command{
		Use: "rotate log|token", Short: "Replace the log key or the token key by a fresh one", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := a.write(cmd.Context(), "rotated the "+args[0]+" key; new key", http.MethodPost, "/api/v1/keys/rotations", nil,
				api.RotationInput{Purpose: args[0]})
			return err
		},
	}
	list := &cobra.Command{
		Use: "list", Short: "The key history recorded in the log", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if purpose != "" {
				q.Set("purpose", purpose)
			}
			items, err := listAll[api.Key](cmd.Context(), a, "/api/v1/keys", q, 0)
			if err != nil {
				return err
			}
			rows := make([][]string, len(items))
			for i, k := range items {
				until := ""
				if k.ValidUntil != nil {
					until = fmt.Sprint(*k.ValidUntil)
				}
				rows[i] = []string{k.KeyID, string(k.Purpose), k.State, k.Owner, fmt.Sprint(k.ValidFrom), until, k.Fingerprint}
			}
			return a.table(items, "KEY\tPURPOSE\tSTATE\tOWNER\tFROM\tUNTIL\tFINGERPRINT", rows)
		},
	}
	list.Flags().StringVar(&purpose, "purpose", "", "log, token or node")
	cmd.AddCommand(rotate, list)
	return cmd
}

func (a *adminClient) auditCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "The audit index"}
	var org, actor, typ, stream, corr, reqID, since, until string
	var limit int
	search := &cobra.Command{
		Use: "search", Short: "Search events by actor, type, stream, time and correlation id (newest first)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := orgQuery(org)
			for k, v := range map[string]string{"actor": actor, "type": typ, "stream": stream, "correlation_id": corr, "request_id": reqID, "since": since, "until": until} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if limit < 1 {
				return fmt.Errorf("--limit %d: want at least 1", limit)
			}
			items, err := listAll[api.AuditEntry](cmd.Context(), a, "/api/v1/audit", q, limit)
			if err != nil {
				return err
			}
			rows := make([][]string, len(items))
			deref := func(s *string) string {
				if s == nil {
					return ""
				}
				return *s
			}
			for i, e := range items {
				rows[i] = []string{fmt.Sprint(e.Position), short(e.RecordedAt), e.Type, e.StreamID, deref(e.Actor), deref(e.CorrelationID)}
			}
			return a.table(items, "POSITION\tRECORDED\tTYPE\tSTREAM\tACTOR\tCORRELATION", rows)
		},
	}
	f := search.Flags()
	f.StringVar(&org, "org", "", "organization name or id (default: your only one; \"*\": everything, superadmin)")
	f.StringVar(&actor, "actor", "", "user id, node:<id> or system:<component>")
	f.StringVar(&typ, "type", "", "event type, like tunnel.created")
	f.StringVar(&stream, "stream", "", "stream id")
	f.StringVar(&corr, "correlation-id", "", "correlation id")
	f.StringVar(&reqID, "request-id", "", "request id")
	f.StringVar(&since, "since", "", "RFC 3339 time: recorded at or after")
	f.StringVar(&until, "until", "", "RFC 3339 time: recorded before")
	f.IntVar(&limit, "limit", 50, "most events to show")
	cmd.AddCommand(search)
	return cmd
}

// credentialQuery is the query of a list of agent tokens or access keys: the org, the tunnel (an
// id or a name) and the state, when given.
func (a *adminClient) credentialQuery(ctx context.Context, org, tunnel, state string) (url.Values, error) {
	q := orgQuery(org)
	if tunnel != "" {
		id, err := a.tunnelID(ctx, org, tunnel)
		if err != nil {
			return nil, err
		}
		q.Set("tunnel_id", id)
	}
	if state != "" {
		q.Set("state", state)
	}
	return q, nil
}

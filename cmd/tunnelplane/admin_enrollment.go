package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/api"
)

// enrollmentTokensCommand: admin nodes enrollment-tokens, the credentials that enroll nodes.
func (a *adminClient) enrollmentTokensCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "enrollment-tokens", Short: "Node enrollment tokens: they enroll a node and do nothing else (superadmin)"}
	var ttl, state, reason string
	var uses int
	create := &cobra.Command{
		Use: "create", Short: "Issue a node enrollment token; the token is the last line, shown once", Args: cobra.NoArgs,
		Long: `Issue a node enrollment token. Start a node with it:

  tunnelplane node --control-url URL --nats-url URL --enrollment-token TOKEN
  (or TUNNELPLANE_ENROLLMENT_TOKEN=TOKEN)

It enrolls at most --uses nodes before it expires (--ttl) and may call no other route of the API.
The node keeps its enrollment: a restart with a used or expired token enrolls nothing new.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if uses < 1 {
				return fmt.Errorf("--uses %d: want 1 or more", uses)
			}
			_, err := a.write(cmd.Context(), "issued node enrollment token", http.MethodPost, "/api/v1/nodes/enrollment-tokens", nil,
				api.EnrollmentTokenInput{TTL: ttl, Uses: uses})
			return err
		},
	}
	create.Flags().StringVar(&ttl, "ttl", "1h", "lifetime like 1h or 2d (at most 7d)")
	create.Flags().IntVar(&uses, "uses", 1, "how many nodes it may enroll (at most 1000)")
	list := &cobra.Command{
		Use: "list", Short: "List node enrollment tokens (records; never the tokens)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if state != "" {
				q.Set("state", state)
			}
			items, err := listAll[api.EnrollmentToken](cmd.Context(), a, "/api/v1/nodes/enrollment-tokens", q, 0)
			if err != nil {
				return err
			}
			rows := make([][]string, len(items))
			for i, t := range items {
				rows[i] = []string{t.ID, t.State, fmt.Sprintf("%d/%d", len(t.Nodes), t.MaxUses), short(t.IssuedAt), short(t.ExpiresAt), t.IssuedBy,
					strings.Join(t.Nodes, ",")}
			}
			return a.table(items, "ID\tSTATE\tUSES\tISSUED\tEXPIRES\tISSUED BY\tNODES", rows)
		},
	}
	list.Flags().StringVar(&state, "state", "", "active, used, expired, revoked or all (default)")
	revoke := &cobra.Command{
		Use: "revoke ID", Short: "Revoke a node enrollment token (the nodes it enrolled stay enrolled)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			if reason != "" {
				q.Set("reason", reason)
			}
			_, err := a.write(cmd.Context(), "revoked node enrollment token", http.MethodDelete, "/api/v1/nodes/enrollment-tokens/"+url.PathEscape(args[0]), q, nil)
			return err
		},
	}
	revoke.Flags().StringVar(&reason, "reason", "", "recorded in the event")
	cmd.AddCommand(create, list, revoke)
	return cmd
}

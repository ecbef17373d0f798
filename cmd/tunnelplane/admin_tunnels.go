package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/domain"
)

func short(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func orgQuery(org string) url.Values {
	q := url.Values{}
	if org != "" {
		q.Set("org", org)
	}
	return q
}

func (a *adminClient) orgsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "orgs", Short: "Organizations"}
	var owner string
	create := &cobra.Command{
		Use: "create NAME", Short: "Create an organization (superadmin)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := a.write(cmd.Context(), "created organization", http.MethodPost, "/api/v1/orgs", nil, api.OrgInput{Name: args[0], Owner: owner})
			return err
		},
	}
	create.Flags().StringVar(&owner, "owner", "", "user id of the first owner")
	list := &cobra.Command{
		Use: "list", Short: "Organizations you hold a role in (all for superadmins)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			items, err := listAll[api.Org](cmd.Context(), a, "/api/v1/orgs", nil, 0)
			if err != nil {
				return err
			}
			rows := make([][]string, len(items))
			for i, o := range items {
				rows[i] = []string{o.Name, o.ID, o.CreatedBy, short(o.CreatedAt)}
			}
			return a.table(items, "NAME\tID\tCREATED BY\tCREATED", rows)
		},
	}
	cmd.AddCommand(create, list)
	return cmd
}

// tunnelID accepts a tunnel's id or its name in the organization.
func (a *adminClient) tunnelID(ctx context.Context, org, ref string) (string, error) {
	if domain.ValidID(ref) {
		return ref, nil
	}
	q := orgQuery(org)
	q.Set("name", ref)
	var page api.List[api.Tunnel]
	if _, err := a.get(ctx, "/api/v1/tunnels", q, &page); err != nil {
		return "", err
	}
	if len(page.Items) != 1 {
		return "", fmt.Errorf("tunnel %q: %w", ref, domain.ErrNotFound)
	}
	return page.Items[0].ID, nil
}

func (a *adminClient) tunnelsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "tunnels", Short: "Tunnels of an organization"}
	var org, state, upstream, protocol, name, ifMatch, reason string
	var settings tunnelSettingFlags
	cmd.PersistentFlags().StringVar(&org, "org", "", "organization name or id (default: your only one)")
	list := &cobra.Command{
		Use: "list", Short: "List tunnels", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := orgQuery(org)
			if state != "" {
				q.Set("state", state)
			}
			items, err := listAll[api.Tunnel](cmd.Context(), a, "/api/v1/tunnels", q, 0)
			if err != nil {
				return err
			}
			rows := make([][]string, len(items))
			for i, t := range items {
				rows[i] = []string{t.Name, t.ID, t.Protocol, t.Upstream, t.State, fmt.Sprint(t.AgentsConnected), fmt.Sprint(t.Version), t.Owner, domain.FormatLabels(t.Labels)}
			}
			return a.table(items, "NAME\tID\tPROTOCOL\tUPSTREAM\tSTATE\tAGENTS\tVERSION\tOWNER\tLABELS", rows)
		},
	}
	list.Flags().StringVar(&state, "state", "", "active (default), deleted or all")
	create := &cobra.Command{
		Use: "create NAME", Short: "Create a tunnel", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			labels, err := settings.labelMap()
			if err != nil {
				return err
			}
			_, err = a.write(cmd.Context(), "created tunnel", http.MethodPost, "/api/v1/tunnels", orgQuery(org),
				api.TunnelInput{Name: args[0], Upstream: upstream, Protocol: protocol, Labels: labels})
			return err
		},
	}
	settings.addLabels(create)
	create.Flags().StringVar(&upstream, "upstream", "", "local service the agent forwards to, like http://127.0.0.1:11434")
	create.Flags().StringVar(&protocol, "protocol", "", "http (default) or tcp")
	update := &cobra.Command{
		Use: "update ID|NAME", Short: "Change a tunnel (--if-match VERSION refuses a stale change)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var patch api.TunnelPatch
			for flag, dst := range map[string]**string{"name": &patch.Name, "upstream": &patch.Upstream, "protocol": &patch.Protocol} {
				if cmd.Flags().Changed(flag) {
					v, _ := cmd.Flags().GetString(flag)
					*dst = &v
				}
			}
			changed, err := settings.patch(&patch)
			if err != nil {
				return err
			}
			if patch.Name == nil && patch.Upstream == nil && patch.Protocol == nil && !changed {
				return errors.New("nothing to change: give --name, --upstream, --protocol, --label, --clear-labels, --cors or --cors-origin")
			}
			id, err := a.tunnelID(cmd.Context(), org, args[0])
			if err != nil {
				return err
			}
			var headers []string
			if ifMatch != "" {
				headers = []string{"If-Match", `"` + strings.Trim(ifMatch, `"`) + `"`}
			}
			_, err = a.write(cmd.Context(), "updated tunnel", http.MethodPatch, "/api/v1/tunnels/"+id, orgQuery(org), patch, headers...)
			return err
		},
	}
	update.Flags().StringVar(&name, "name", "", "new name")
	update.Flags().StringVar(&upstream, "upstream", "", "new upstream")
	update.Flags().StringVar(&protocol, "protocol", "", "new protocol")
	settings.addUpdate(update)
	update.Flags().StringVar(&ifMatch, "if-match", "", "the version you expect (from list); a concurrent change makes the update fail")
	del := &cobra.Command{
		Use: "delete ID|NAME", Short: "Delete a tunnel", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.tunnelID(cmd.Context(), org, args[0])
			if err != nil {
				return err
			}
			q := orgQuery(org)
			if reason != "" {
				q.Set("reason", reason)
			}
			_, err = a.write(cmd.Context(), "deleted tunnel", http.MethodDelete, "/api/v1/tunnels/"+id, q, nil)
			return err
		},
	}
	del.Flags().StringVar(&reason, "reason", "", "recorded in the event")
	var sessionState string
	var sessionLimit int
	sessions := &cobra.Command{
		Use: "sessions [ID|NAME]", Short: "Agent sessions, newest first: which agents are connected on which node, how earlier ones ended", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := orgQuery(org)
			if len(args) == 1 {
				id, err := a.tunnelID(cmd.Context(), org, args[0])
				if err != nil {
					return err
				}
				q.Set("tunnel_id", id)
			}
			if sessionState != "" {
				q.Set("state", sessionState)
			}
			if sessionLimit < 0 {
				return fmt.Errorf("--limit %d: give a count, or 0 for all", sessionLimit)
			}
			items, err := listAll[api.AgentSession](cmd.Context(), a, "/api/v1/sessions", q, sessionLimit)
			if err != nil {
				return err
			}
			names, err := a.tunnelNames(cmd.Context(), org, len(items))
			if err != nil {
				return err
			}
			rows := make([][]string, len(items))
			for i, s := range items {
				ended, reason, traffic := "", "", ""
				if s.EndedAt != nil {
					ended = short(*s.EndedAt)
				}
				if s.EndReason != nil {
					reason = *s.EndReason
				}
				if s.BytesIn != nil && s.BytesOut != nil {
					traffic = fmt.Sprintf("%d / %d", *s.BytesIn, *s.BytesOut)
				}
				rows[i] = []string{names.of(s.TunnelID), s.State, s.NodeID, s.RemoteAddr, s.AgentVersion, s.Protocol, short(s.ConnectedAt), ended, traffic, reason}
			}
			return a.table(items, "TUNNEL\tSTATE\tNODE\tREMOTE\tAGENT\tPROTOCOL\tCONNECTED\tENDED\tBYTES IN / OUT\tEND REASON", rows)
		},
	}
	sessions.Flags().StringVar(&sessionState, "state", "", "connected, ended, unknown or all (default)")
	sessions.Flags().IntVar(&sessionLimit, "limit", 50, "at most this many (0: all)")
	cmd.AddCommand(list, create, update, del, sessions, a.tunnelActivityCommand(&org))
	cmd.AddCommand(a.accessLogCommands(&org)...)
	return cmd
}

// tunnelNames maps tunnel ids to names for a table (no lookup when the table is empty).
type tunnelNames map[string]string

func (a *adminClient) tunnelNames(ctx context.Context, org string, rows int) (tunnelNames, error) {
	names := tunnelNames{}
	if rows == 0 {
		return names, nil
	}
	q := orgQuery(org)
	q.Set("state", "all")
	tunnels, err := listAll[api.Tunnel](ctx, a, "/api/v1/tunnels", q, 0)
	if err != nil {
		return nil, err
	}
	for _, t := range tunnels {
		names[t.ID] = t.Name
	}
	return names, nil
}

// of is the tunnel's name, or its id when it is unknown.
func (n tunnelNames) of(id string) string {
	if name := n[id]; name != "" {
		return name
	}
	return id
}

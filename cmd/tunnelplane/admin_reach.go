package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/compliance/reach"
)

// accessCommand answers who could reach a tunnel (`admin access who`).
func (a *adminClient) accessCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "access", Short: "Who could reach a tunnel, and why (owners, admins, auditors)"}
	var org, tunnel, at string
	who := &cobra.Command{
		Use:   "who",
		Short: "Who could reach a tunnel now, or at a past time (--at: replayed from the log), and the chain behind each",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			id, err := a.tunnelID(cmd.Context(), org, tunnel)
			if err != nil {
				return err
			}
			q := orgQuery(org)
			q.Set("tunnel", id)
			if at != "" {
				q.Set("at", at)
			}
			var ans reach.Answer
			raw, err := a.get(cmd.Context(), "/api/v1/access", q, &ans)
			if err != nil {
				return err
			}
			if a.asJSON {
				return a.printJSON(raw)
			}
			fmt.Fprintf(a.g.stdout, "tunnel %s (%s) %s at %s, %s to position %d\n", ans.Tunnel.Name, ans.Tunnel.ID, ans.Tunnel.State,
				ans.At.Format("2006-01-02T15:04:05.000Z07:00"), ans.Source, ans.Position)
			var rows [][]string
			for _, s := range ans.Subjects {
				for _, r := range s.Reasons {
					rows = append(rows, []string{s.Kind, s.ID, r.Kind, chain(r)})
				}
			}
			if err := a.table(ans.Subjects, "SUBJECT\tID\tREASON\tCHAIN (event@position)", rows); err != nil || len(ans.Deletions) == 0 {
				return err
			}
			// Who was deleted: what they held is gone above, and their tokens from before are refused.
			fmt.Fprintln(a.g.stdout, "\ndeleted users (their tokens issued before are refused)")
			rows = rows[:0]
			for _, d := range ans.Deletions {
				rows = append(rows, []string{d.UserID, d.OrgID, fmt.Sprintf("%s@%d", d.Event.Type, d.Event.Position), short(d.Event.RecordedAt), d.Reason})
			}
			return a.table(nil, "USER\tFROM ORG\tEVENT\tAT\tREASON", rows)
		},
	}
	who.Flags().StringVar(&org, "org", "", "organization name or id (default: your only one)")
	who.Flags().StringVar(&tunnel, "tunnel", "", "tunnel id or name (required)")
	who.Flags().StringVar(&at, "at", "", "a past time (RFC 3339); default: now, from the read models")
	_ = who.MarkFlagRequired("tunnel")
	cmd.AddCommand(who)
	return cmd
}

// chain is a reason's events in one line: what it rests on and where the log holds it.
func chain(r reach.Reason) string {
	var parts []string
	for _, role := range r.Roles {
		parts = append(parts, fmt.Sprintf("%s in %s (role.assigned@%d)", role.Role, role.Org, role.Assignment.Position))
	}
	if r.Tunnel != nil {
		parts = append(parts, fmt.Sprintf("owner (tunnel.created@%d)", r.Tunnel.Position))
	}
	if g := r.Grant; g != nil {
		parts = append(parts, fmt.Sprintf("grant %s by %s until %s (grant.created@%d)", g.GrantID, g.GrantedBy, short(g.ExpiresAt), g.Event.Position))
		for _, ap := range g.Approvals {
			parts = append(parts, fmt.Sprintf("approved by %s (access.approved@%d)", ap.Approver, ap.Event.Position))
		}
		if q := g.Request; q != nil {
			parts = append(parts, fmt.Sprintf("requested by %s: %q (access.requested@%d)", q.Requester, q.Reason, q.Event.Position))
		}
	}
	if k := r.Key; k != nil {
		parts = append(parts, fmt.Sprintf("issued by %s until %s (access_key.issued@%d)", k.IssuedBy, short(k.ExpiresAt), k.Event.Position))
	}
	return strings.Join(parts, "; ")
}

// tunnelActivityCommand lists a tunnel's activity (`admin tunnels activity`).
func (a *adminClient) tunnelActivityCommand(org *string) *cobra.Command {
	var from, to, kinds string
	var most int
	cmd := &cobra.Command{
		Use:   "activity TUNNEL",
		Short: "A tunnel's activity, oldest first: configuration, credentials, grants and requests, sessions, and per-caller usage",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if most < 1 {
				return fmt.Errorf("--max must be at least 1")
			}
			id, err := a.tunnelID(cmd.Context(), *org, args[0])
			if err != nil {
				return err
			}
			q := orgQuery(*org)
			for k, v := range map[string]string{"from": from, "to": to, "kinds": kinds} {
				if v != "" {
					q.Set(k, v)
				}
			}
			var all api.Activity
			for page := 0; ; page++ {
				q.Set("limit", fmt.Sprint(min(api.MaxLimit, most-len(all.Items))))
				var p api.Activity
				if _, err := a.get(cmd.Context(), "/api/v1/tunnels/"+url.PathEscape(id)+"/activity", q, &p); err != nil {
					return err
				}
				if page == 0 {
					all = p
				} else {
					all.Items = append(all.Items, p.Items...)
				}
				all.NextCursor = p.NextCursor
				if p.NextCursor == "" || len(all.Items) >= most {
					break
				}
				q.Set("cursor", p.NextCursor)
			}
			if a.asJSON {
				raw, err := json.Marshal(all)
				if err != nil {
					return err
				}
				return a.printJSON(raw)
			}
			rows := make([][]string, len(all.Items))
			for i, it := range all.Items {
				rows[i] = []string{fmt.Sprint(it.Position), short(it.RecordedAt), it.Kind, it.Type, it.Actor}
			}
			if err := a.table(nil, "POSITION\tTIME\tKIND\tTYPE\tACTOR", rows); err != nil {
				return err
			}
			if all.NextCursor != "" {
				fmt.Fprintf(a.g.stdout, "(more: raise --max, or narrow --from/--to)\n")
			}
			if all.Usage == nil {
				return nil
			}
			fmt.Fprintf(a.g.stdout, "\nusage %s – %s\n", short(all.Usage.From), short(all.Usage.To))
			if len(all.Usage.Callers) == 0 {
				fmt.Fprintln(a.g.stdout, "no calls")
				return nil
			}
			rows = make([][]string, len(all.Usage.Callers))
			for i, c := range all.Usage.Callers {
				rows[i] = []string{c.CallerKind, c.CallerID, fmt.Sprint(c.Requests), fmt.Sprint(c.Errors), fmt.Sprint(c.BytesIn), fmt.Sprint(c.BytesOut), short(c.LastHour)}
			}
			return a.table(nil, "CALLER\tID\tREQUESTS\tERRORS\tBYTES IN\tBYTES OUT\tLAST HOUR", rows)
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "RFC 3339 time: events recorded at or after it")
	cmd.Flags().StringVar(&to, "to", "", "RFC 3339 time: events recorded before it")
	cmd.Flags().StringVar(&kinds, "kinds", "", "comma-separated: config, credentials, grants, sessions, usage (default: all)")
	cmd.Flags().IntVar(&most, "max", 1000, "the most events shown")
	return cmd
}

package main

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/domain"
)

// accessKeysCommand: tunnel access keys, the credentials of a tunnel's callers. ("admin keys"
// already names the signing keys.)
func (a *adminClient) accessKeysCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "access-keys", Short: "Tunnel access keys (a credential that calls one tunnel, or the tunnels carrying some labels, and nothing else)"}
	var org, ttl, tunnel, state, reason, tier string
	var cidrs, labels []string
	cmd.PersistentFlags().StringVar(&org, "org", "", "organization name or id (default: your only one)")
	create := &cobra.Command{
		Use: "create", Short: "Issue an access key for a tunnel or a label selector; the key is the last line, shown once", Args: cobra.NoArgs,
		Long: `Issue an access key for --tunnel, or for the tunnels of the organization that carry every
--label given (those labelled later included, while they carry them). Callers present it to a
node's ingress as "Authorization: Bearer <key>", or in "X-Tunnel-Key: <key>" or
"Proxy-Authorization: Bearer <key>": then their own Authorization header reaches the tunnel's
upstream untouched.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in := api.AccessKeyInput{TTL: ttl, CIDRs: cidrs, RateTier: tier}
			if (tunnel == "") == (len(labels) == 0) {
				return errors.New("give --tunnel or --label (a key is for one tunnel or for the tunnels carrying some labels)")
			}
			if len(labels) > 0 {
				selector, err := domain.ParseLabels(labels)
				if err != nil {
					return err
				}
				_, err = a.write(cmd.Context(), "issued access key", http.MethodPost, "/api/v1/access-keys", orgQuery(org),
					api.LabelAccessKeyInput{Selector: selector, AccessKeyInput: in})
				return err
			}
			id, err := a.tunnelID(cmd.Context(), org, tunnel)
			if err != nil {
				return err
			}
			_, err = a.write(cmd.Context(), "issued access key", http.MethodPost, "/api/v1/tunnels/"+id+"/access-keys", orgQuery(org), in)
			return err
		},
	}
	create.Flags().StringVar(&tunnel, "tunnel", "", "the tunnel the key calls (id or name)")
	create.Flags().StringArrayVar(&labels, "label", nil, "instead of --tunnel: a label key=value the tunnels the key calls carry (repeat: all of them)")
	create.Flags().StringVar(&ttl, "ttl", "", "lifetime like 30d or 720h (default 30d, at most 365d)")
	create.Flags().StringSliceVar(&cidrs, "cidr", nil, "accept the key only from this source prefix or address (repeat or comma-separate; default: any)")
	create.Flags().StringVar(&tier, "rate-tier", "", "name of a rate tier (recorded for later)")
	list := &cobra.Command{
		Use: "list", Short: "List access keys (records; never the keys)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := a.credentialQuery(cmd.Context(), org, tunnel, state)
			if err != nil {
				return err
			}
			items, err := listAll[api.AccessKey](cmd.Context(), a, "/api/v1/access-keys", q, 0)
			if err != nil {
				return err
			}
			names, err := a.tunnelNames(cmd.Context(), org, len(items))
			if err != nil {
				return err
			}
			rows := make([][]string, len(items))
			for i, k := range items {
				from := strings.Join(k.CIDRs, ",")
				if from == "" {
					from = "any"
				}
				scope := names.of(k.TunnelID)
				if k.Selector != nil {
					scope = "labels " + domain.FormatLabels(k.Selector)
				}
				rows[i] = []string{k.ID, scope, k.State, short(k.IssuedAt), short(k.ExpiresAt), from, k.IssuedBy}
			}
			return a.table(items, "ID\tTUNNEL\tSTATE\tISSUED\tEXPIRES\tFROM\tISSUED BY", rows)
		},
	}
	list.Flags().StringVar(&tunnel, "tunnel", "", "only this tunnel's (id or name)")
	list.Flags().StringVar(&state, "state", "", "active, revoked, expired or all (default)")
	revoke := &cobra.Command{
		Use: "revoke ID", Short: "Revoke an access key: nodes refuse it as soon as the revocation reaches them", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := orgQuery(org)
			if reason != "" {
				q.Set("reason", reason)
			}
			_, err := a.write(cmd.Context(), "revoked access key", http.MethodDelete, "/api/v1/access-keys/"+url.PathEscape(args[0]), q, nil)
			return err
		},
	}
	revoke.Flags().StringVar(&reason, "reason", "", "recorded in the event")
	cmd.AddCommand(create, list, revoke)
	return cmd
}

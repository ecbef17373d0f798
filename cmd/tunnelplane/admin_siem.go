package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/domain"
)

// siemScope is the org query of a sink command: --platform is "*".
func siemScope(org string, platform bool) (url.Values, error) {
	if platform && org != "" && org != domain.PlatformOrg {
		return nil, errors.New("--platform and --org: give one")
	}
	if platform {
		org = domain.PlatformOrg
	}
	return orgQuery(org), nil
}

// sinkID accepts a sink's id or its name in the scope.
func (a *adminClient) sinkID(ctx context.Context, q url.Values, ref string) (string, error) {
	if domain.ValidID(ref) {
		return ref, nil
	}
	items, err := listAll[api.SIEMSink](ctx, a, "/api/v1/siem/sinks", maps.Clone(q), 0) // it sets limit and cursor
	if err != nil {
		return "", err
	}
	for _, k := range items {
		if k.Name == ref {
			return k.ID, nil
		}
	}
	return "", fmt.Errorf("siem sink %q: %w", ref, domain.ErrNotFound)
}

func (a *adminClient) siemCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "siem", Short: "SIEM sinks: forward the log to a SIEM over syslog (TLS) or HTTPS (Splunk HEC, JSON)",
		Long: `A sink forwards every event of the log (a platform sink, superadmins) or of one organization (its
owners and admins) to a SIEM, at least once, each message with the event id (the dedupe key), the
log position, the sink's own sequence number (gaps are detectable) and the record's hash.
Configuring one is recorded in the log. docs/siem.md has the formats and the guarantees.`}
	var org, reason string
	var platform bool
	cmd.PersistentFlags().StringVar(&org, "org", "", "organization name or id, or * for the platform (default: your only one)")
	cmd.PersistentFlags().BoolVar(&platform, "platform", false, "a platform sink (every event; superadmins), same as --org '*'")
	// target is the scope's query and the id of the sink ref names (an id or a name).
	target := func(ctx context.Context, ref string) (url.Values, string, error) {
		q, err := siemScope(org, platform)
		if err != nil {
			return nil, "", err
		}
		id, err := a.sinkID(ctx, q, ref)
		return q, id, err
	}
	var f siemFlags
	add := &cobra.Command{
		Use: "add NAME", Short: "Configure a sink; forwarding starts within a second", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := siemScope(org, platform)
			if err != nil {
				return err
			}
			in := api.SIEMSinkInput{Name: args[0]}
			if err := f.input(cmd.Flags(), &in); err != nil {
				return err
			}
			_, err = a.write(cmd.Context(), "configured siem sink", http.MethodPost, "/api/v1/siem/sinks", q, in)
			return err
		},
	}
	f.register(add.Flags())
	list := &cobra.Command{
		Use: "list", Short: "Sinks and how their delivery goes", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := siemScope(org, platform)
			if err != nil {
				return err
			}
			items, err := listAll[api.SIEMSink](cmd.Context(), a, "/api/v1/siem/sinks", q, 0)
			if err != nil {
				return err
			}
			rows := make([][]string, len(items))
			for i, k := range items {
				where := k.Address + k.URL
				rows[i] = []string{k.Name, k.ID, k.Transport + "/" + k.Format, where, fmt.Sprint(k.Status.Delivered), fmt.Sprint(k.Status.LagEvents),
					fmt.Sprintf("%.1fs", k.Status.LagSeconds), sinkState(k.Status)}
			}
			return a.table(items, "NAME\tID\tTRANSPORT\tRECEIVER\tDELIVERED\tLAG\tLAG AGE\tSTATE", rows)
		},
	}
	show := &cobra.Command{
		Use: "show ID|NAME", Short: "One sink: its configuration (secrets only as sealed or their reference) and delivery", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q, id, err := target(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			var k api.SIEMSink
			raw, err := a.get(cmd.Context(), "/api/v1/siem/sinks/"+id, maps.Clone(q), &k)
			if err != nil {
				return err
			}
			if a.asJSON {
				return a.printJSON(raw)
			}
			return a.table(k, "FIELD\tVALUE", sinkRows(k))
		},
	}
	update := &cobra.Command{
		Use: "update ID|NAME", Short: "Change a sink (flags not given keep their value; secrets too)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q, id, err := target(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			var k api.SIEMSink
			if _, err := a.get(cmd.Context(), "/api/v1/siem/sinks/"+id, maps.Clone(q), &k); err != nil {
				return err
			}
			in := api.SIEMSinkInput{Name: k.Name, Transport: k.Transport, Address: k.Address, URL: k.URL, Profile: k.Profile, Format: k.Format,
				ServerName: k.ServerName, Types: k.Types, MinSeverity: k.MinSeverity, RedactClientIPs: k.RedactClientIPs}
			if !strings.HasPrefix(k.Token, "sealed") {
				in.TokenRef = k.Token
			}
			if !strings.HasPrefix(k.ClientKey, "sealed") {
				in.ClientKeyRef = k.ClientKey
			}
			if cmd.Flags().Changed("token-file") {
				in.TokenRef = ""
			}
			if cmd.Flags().Changed("client-key-file") {
				in.ClientKeyRef = ""
			}
			if err := f.input(cmd.Flags(), &in); err != nil {
				return err
			}
			if k.CACert && !cmd.Flags().Changed("ca-file") || k.ClientCert && !cmd.Flags().Changed("client-cert-file") {
				return errors.New("the sink has certificates, which the API does not return: give --ca-file and --client-cert-file again")
			}
			_, err = a.write(cmd.Context(), "updated siem sink", http.MethodPut, "/api/v1/siem/sinks/"+id, q, in, "If-Match", fmt.Sprintf("%q", fmt.Sprint(k.Version)))
			return err
		},
	}
	f.register(update.Flags())
	remove := &cobra.Command{
		Use: "remove ID|NAME", Short: "Stop a sink for good", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q, id, err := target(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if reason != "" {
				q.Set("reason", reason)
			}
			_, err = a.write(cmd.Context(), "removed siem sink", http.MethodDelete, "/api/v1/siem/sinks/"+id, q, nil)
			return err
		},
	}
	remove.Flags().StringVar(&reason, "reason", "", "recorded in the event")
	var position uint64
	skip := &cobra.Command{
		Use: "skip ID|NAME --position N --reason TEXT", Short: "Give up one record the sink's receiver refuses for good (recorded in the log)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q, id, err := target(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			_, err = a.write(cmd.Context(), "skipped", http.MethodPost, "/api/v1/siem/sinks/"+id+"/skips", q, api.SIEMSkipInput{Position: position, Reason: reason})
			return err
		},
	}
	skip.Flags().Uint64Var(&position, "position", 0, "log position of the refused record (show names it as stuck at)")
	skip.Flags().StringVar(&reason, "reason", "", "why: recorded in the log, and forwarded")
	cmd.AddCommand(add, list, show, update, remove, skip)
	return cmd
}

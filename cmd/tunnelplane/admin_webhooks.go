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

// webhooksCommand: an organization's webhook endpoints (owners and admins).
func (a *adminClient) webhooksCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "webhooks", Short: "Webhook endpoints: the organization's notifications, signed per Standard Webhooks"}
	var org, name, target, reason string
	var types []string
	cmd.PersistentFlags().StringVar(&org, "org", "", "organization name or id (default: your only one)")
	typesHelp := "a notification type to deliver (repeat or comma-separate; default: all): " + strings.Join(domain.WebhookEventTypes, ", ")
	create := &cobra.Command{
		Use: "create", Short: "Add an endpoint; its whsec_ signing secret is the last line, shown once", Args: cobra.NoArgs,
		Long: `Add an endpoint at --url (https; http only to a loopback host). Each delivery is a POST of a JSON
message with the headers webhook-id, webhook-timestamp and webhook-signature ("v1,<base64 HMAC-SHA256
of id.timestamp.body>" under the secret), so any Standard Webhooks library verifies it. Loopback,
private and link-local addresses are refused unless the control plane runs with
--webhook-allow-private.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := a.write(cmd.Context(), "created webhook", http.MethodPost, "/api/v1/webhooks", orgQuery(org), api.WebhookInput{Name: name, URL: target, Types: types})
			return err
		},
	}
	update := &cobra.Command{
		Use: "update ID", Short: "Replace an endpoint's name, URL and types (the secret stays)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := a.write(cmd.Context(), "updated webhook", http.MethodPut, "/api/v1/webhooks/"+url.PathEscape(args[0]), orgQuery(org),
				api.WebhookInput{Name: name, URL: target, Types: types})
			return err
		},
	}
	for _, c := range []*cobra.Command{create, update} {
		c.Flags().StringVar(&name, "name", "", "a DNS label naming the endpoint")
		c.Flags().StringVar(&target, "url", "", "where deliveries are posted")
		c.Flags().StringSliceVar(&types, "type", nil, typesHelp)
		_ = c.MarkFlagRequired("name")
		_ = c.MarkFlagRequired("url")
	}
	list := &cobra.Command{
		Use: "list", Short: "List endpoints with their delivery status (never the secrets)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			items, err := listAll[api.Webhook](cmd.Context(), a, "/api/v1/webhooks", orgQuery(org), 0)
			if err != nil {
				return err
			}
			rows := make([][]string, len(items))
			for i, w := range items {
				rows[i] = webhookRow(w)
			}
			return a.table(items, webhookHeader, rows)
		},
	}
	show := &cobra.Command{
		Use: "show ID", Short: "One endpoint: delivered, retried, failed, last error, lag", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var w api.Webhook
			if _, err := a.get(cmd.Context(), "/api/v1/webhooks/"+url.PathEscape(args[0]), orgQuery(org), &w); err != nil {
				return err
			}
			return a.table(w, webhookHeader, [][]string{webhookRow(w)})
		},
	}
	rotate := &cobra.Command{
		Use: "rotate-secret ID", Short: "Give an endpoint a new secret (the last line, shown once); the old one also signs for 24 h", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := a.write(cmd.Context(), "rotated the secret of webhook", http.MethodPost, "/api/v1/webhooks/"+url.PathEscape(args[0])+"/rotate-secret", orgQuery(org), nil)
			return err
		},
	}
	remove := &cobra.Command{
		Use: "delete ID", Short: "Stop delivering to an endpoint", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := orgQuery(org)
			if reason != "" {
				q.Set("reason", reason)
			}
			_, err := a.write(cmd.Context(), "deleted webhook", http.MethodDelete, "/api/v1/webhooks/"+url.PathEscape(args[0]), q, nil)
			return err
		},
	}
	remove.Flags().StringVar(&reason, "reason", "", "recorded in the event")
	cmd.AddCommand(create, list, show, update, rotate, remove)
	return cmd
}

const webhookHeader = "ID\tNAME\tURL\tTYPES\tDELIVERED\tRETRIED\tFAILED\tLAG\tLAST ERROR"

func webhookRow(w api.Webhook) []string {
	types := strings.Join(w.Types, ",")
	if types == "" {
		types = "all"
	}
	st := w.Status
	return []string{w.ID, w.Name, w.URL, types, fmt.Sprint(st.Delivered), fmt.Sprint(st.Retried), fmt.Sprint(st.Failed),
		fmt.Sprintf("%d (%.0fs)", st.LagEvents, st.LagSeconds), st.LastError}
}

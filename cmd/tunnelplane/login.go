package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/login"
)

func newLoginCommand(g *globals) *cobra.Command {
	var apiURL string
	var scopes []string
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log in through the control plane's identity provider (device code) and keep the token for admin commands",
		Long: `login asks the control plane (--control) which OpenID Connect provider it trusts, starts a device
login there and prints the address to open and the code to enter, in any browser, on any device.
Once you approved it there, the provider's ID token is exchanged at the control plane for a
tunnelplane user token, which is kept in <config-dir>/credentials.json (mode 0600) for that control
plane only. Admin commands then use it when neither --token nor TUNNELPLANE_TOKEN is given.

The token is never printed. Roles and grants decide what it may do: your user id is printed, for an
administrator to grant them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := g.stdout
			res, err := login.Run(cmd.Context(), login.Config{APIURL: apiURL, Scopes: scopes, Show: func(p login.Prompt) {
				fmt.Fprintf(out, "To log in, open %s and enter the code %s\n", p.URI, p.Code)
				if p.Complete != "" {
					fmt.Fprintf(out, "  (or open %s)\n", p.Complete)
				}
				fmt.Fprintln(out, "Waiting for the approval...")
			}})
			if err != nil {
				return err
			}
			path, err := login.Save(g.configDir, login.Credential{APIURL: apiURL, Token: res.Token, UserID: res.UserID, ExpiresAt: res.ExpiresAt})
			if err != nil {
				return err
			}
			who := res.UserID
			if res.Name != "" {
				who += " (" + res.Name + ")"
			}
			fmt.Fprintf(out, "logged in as %s\n", who)
			if len(res.Groups) > 0 {
				fmt.Fprintf(out, "groups:  %s\n", strings.Join(res.Groups, ", "))
			}
			fmt.Fprintf(out, "expires: %s\n", res.ExpiresAt.UTC().Format(time.RFC3339))
			fmt.Fprintf(out, "token stored in %s\n", path)
			return nil
		},
	}
	f := cmd.Flags()
	def := envDefault("API_URL", "http://"+controlapp.DefaultAPIAddr)
	f.StringVar(&apiURL, "control", def, "the control plane's admin API URL (env TUNNELPLANE_API_URL)")
	f.StringVar(&apiURL, "api-url", def, "the same as --control, as admin commands call it")
	f.StringSliceVar(&scopes, "scope", login.DefaultScopes, "scopes asked of the identity provider")
	return cmd
}

package main

import (
	"errors"
	"net/http"
	"net/url"

	"github.com/spf13/cobra"
)

// usersCommand: admin users, deleting a user from an organization or from everywhere.
func (a *adminClient) usersCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "users", Short: "Users: delete one from an organization or everywhere"}
	var org, reason string
	del := &cobra.Command{
		Use: "delete USER", Short: "Delete USER: withdraw their roles, revoke their grants, deny their pending requests", Args: cobra.ExactArgs(1),
		Long: `Delete USER (the id a token's sub names) from an organization, or with --org '*' from every
organization and the platform (superadmins). One append records user.deleted and, caused by it,
role.unassigned for each of the user's roles there, grant.revoked for each grant made to the user
by name on its tunnels and access.denied for each of the user's pending access requests. Nodes end
the user's open calls there within a second and refuse every token of the user issued before the
deletion; a token issued later is decided as anyone's (by roles and grants). Group grants are not
changed: take the user out of the group at the identity provider. Deleting an owner takes an
owner. Nobody deletes themselves.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if reason == "" {
				return errors.New("--reason is required (it is recorded in user.deleted)")
			}
			q := orgQuery(org)
			q.Set("reason", reason)
			_, err := a.write(cmd.Context(), "deleted user", http.MethodDelete, "/api/v1/users/"+url.PathEscape(args[0]), q, nil)
			return err
		},
	}
	del.Flags().StringVar(&org, "org", "", "organization name or id (default: your only one; \"*\": every organization and the platform)")
	del.Flags().StringVar(&reason, "reason", "", "why (required; recorded in user.deleted)")
	cmd.AddCommand(del)
	return cmd
}

package main

import (
	"net/http"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/api"
)

// subjectsCommand: admin subjects, the people (actors) personal data in the log is about.
func (a *adminClient) subjectsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "subjects", Short: "Subjects of personal data in the log (superadmin)"}
	var reason string
	erase := &cobra.Command{
		Use: "erase SUBJECT", Short: "Erase a subject's personal data: destroy its data keys and append subject.erased", Args: cobra.ExactArgs(1),
		Long: `Erase a subject's personal data (crypto-shredding). SUBJECT is the actor id the log names:
a user's id (the token's sub), node:<id>, enrollment-token:<id>, or "anonymous" for failed logins.

The subject's data keys are destroyed, so the client addresses and user agents sealed for it read
[erased] in the audit search, reports, exports and SIEM messages from now on. The log is not
changed (its records hold only the sealed values), so verify still passes. This cannot be undone.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := a.write(cmd.Context(), "erased subject", http.MethodPost, "/api/v1/subjects/"+url.PathEscape(args[0])+"/erase", nil,
				api.EraseSubjectInput{Reason: reason})
			return err
		},
	}
	erase.Flags().StringVar(&reason, "reason", "", "why (recorded in subject.erased)")
	cmd.AddCommand(erase)
	return cmd
}

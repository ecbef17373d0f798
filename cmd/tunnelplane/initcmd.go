package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/devdb"
)

func newInitCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "init",
		Short: "Create the schema, the log signing key and the genesis record (harmless to repeat)",
		Long: `init applies the database migrations, creates the control plane's log signing key in
<data-dir>/keys/log (mode 0600) if there is none, and writes the genesis record carrying its
public key. On an initialised log it only checks that the key matches. The last line printed is
the key's fingerprint.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return initLog(cmd.Context(), g, true)
		},
	}
}

// initLog migrates the database and ensures the genesis record; verbose prints what it did.
func initLog(ctx context.Context, g *globals, verbose bool) error {
	srv, err := g.resolveDatabase(ctx, devdb.PrivateReuse, true)
	if err != nil {
		return err
	}
	res, err := controlapp.InitLog(ctx, srv.URL, g.keys())
	if err != nil {
		return err
	}
	if verbose {
		state := "already initialised"
		if res.Created {
			state = "created"
		}
		fmt.Fprintf(g.stdout, "database:    %s (%s)\n", redactURL(srv.URL), srv.Source)
		fmt.Fprintf(g.stdout, "schema:      version %d\n", res.SchemaVersion)
		fmt.Fprintf(g.stdout, "log:         %s (%s)\n", res.Origin, state)
		fmt.Fprintf(g.stdout, "log key:     %s in %s\n", res.KeyID, g.keys().Where())
		fmt.Fprintf(g.stdout, "fingerprint: %s\n", res.Fingerprint)
	}
	return nil
}

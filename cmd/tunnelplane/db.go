package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/internal/devdb"
)

func newDBCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "db",
		Short: "The PostgreSQL server tunnelplane uses (url, stop)",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "url",
		Short: "Print the database URL tunnelplane resolves (env, local server or private cluster)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			srv, err := g.resolveDatabase(cmd.Context(), devdb.PrivateReuse, false)
			if err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, srv.URL)
			return nil
		},
	}, &cobra.Command{
		Use:   "stop",
		Short: "Stop the private PostgreSQL cluster under the data dir, if one runs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return devdb.StopPrivate(cmd.Context(), filepath.Join(g.dataDir, "postgres"))
		},
	})
	return cmd
}

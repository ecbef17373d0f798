package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/devdb"
)

func newDBCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "db",
		Short: "The PostgreSQL server tunnelplane uses (url, stop, reset)",
	}
	var yes bool
	reset := &cobra.Command{
		Use:   "reset",
		Short: "Drop the log's database, to start over with `tunnelplane init` (asks first)",
		Long: `reset drops the database tunnelplane resolves (--database-url, or the local server's), with every
record of its log, after you type the database name (or with --yes). The keys in the data dir
stay (the checkpoint it remembers of the dropped log goes); ` + "`tunnelplane init`" + ` then starts a new log. Nothing can bring the old log back: export what you need first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			srv, err := g.resolveDatabase(cmd.Context(), devdb.PrivateReuse, false)
			if err != nil {
				return err
			}
			name, err := srv.Database()
			if err != nil {
				return err
			}
			if !yes {
				fmt.Fprintf(g.stderr, "This drops database %q (%s) and every record of its log.\nType the database name to confirm: ", name, redactURL(srv.URL))
				line, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if strings.TrimSpace(line) != name {
					return fmt.Errorf("not confirmed: nothing dropped (type %q, or pass --yes)", name)
				}
			}
			if err := srv.DropDatabase(cmd.Context()); err != nil {
				return err
			}
			// The dropped log's newest checkpoint would make control refuse the new log.
			if err := os.Remove(controlapp.CheckpointFile(g.dataDir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("dropped database %q but kept its checkpoint: %w", name, err)
			}
			fmt.Fprintf(g.stdout, "dropped database %q; run `tunnelplane init` to start a new log\n", name)
			return nil
		},
	}
	reset.Flags().BoolVar(&yes, "yes", false, "do not ask")
	cmd.AddCommand(reset)
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

package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/internal/devdb"
	"github.com/tunnelplane/tunnelplane/migrations"
)

func newMigrateCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Manage the database schema (up, down, version)",
	}
	var schemaOnly bool
	up := &cobra.Command{
		Use:   "up",
		Short: "Apply pending migrations and make sure the log has its genesis record",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !schemaOnly {
				return initLog(cmd.Context(), g, true)
			}
			srv, err := g.resolveDatabase(cmd.Context(), devdb.PrivateNever, true)
			if err != nil {
				return err
			}
			if err := migrations.Up(cmd.Context(), srv.URL); err != nil {
				return err
			}
			return printVersion(cmd, g, srv.URL)
		},
	}
	up.Flags().BoolVar(&schemaOnly, "schema-only", false, "only apply migrations; do not create a key or the genesis record")
	var destroyLog bool
	down := &cobra.Command{
		Use:   "down [STEPS]",
		Short: "Revert the newest STEPS migrations (default 1)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			steps := 1
			if len(args) == 1 {
				n, err := strconv.Atoi(args[0])
				if err != nil || n < 1 {
					return fmt.Errorf("STEPS must be a positive number, got %q", args[0])
				}
				steps = n
			}
			srv, err := g.resolveDatabase(cmd.Context(), devdb.PrivateNever, false)
			if err != nil {
				return err
			}
			if err := migrations.Down(cmd.Context(), srv.URL, steps, destroyLog); err != nil {
				return err
			}
			return printVersion(cmd, g, srv.URL)
		},
	}
	down.Flags().BoolVar(&destroyLog, "destroy-log", false, "allow reverting the migration that holds the event log, deleting every record")
	ver := &cobra.Command{
		Use:   "version",
		Short: "Print the schema version of the database",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			srv, err := g.resolveDatabase(cmd.Context(), devdb.PrivateNever, false)
			if err != nil {
				return err
			}
			return printVersion(cmd, g, srv.URL)
		},
	}
	cmd.AddCommand(up, down, ver)
	return cmd
}

func printVersion(cmd *cobra.Command, g *globals, dbURL string) error {
	st, err := migrations.Version(cmd.Context(), dbURL)
	if err != nil {
		return err
	}
	dirty := ""
	if st.Dirty {
		dirty = " (dirty: a migration failed part-way; repair it, then force the version)"
	}
	fmt.Fprintf(g.stdout, "schema version %d of %d%s\n", st.Version, st.Latest, dirty)
	return nil
}

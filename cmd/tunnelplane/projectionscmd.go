package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/devdb"
	"github.com/tunnelplane/tunnelplane/migrations"
	"github.com/tunnelplane/tunnelplane/projections"
)

// projectionState is a projection's row in projection_state, as stored (what every instance
// shares), with its lag behind the log head.
type projectionState struct {
	Name            string    `json:"name"`
	Generation      int       `json:"generation"`
	Position        int64     `json:"position"`
	Lag             int64     `json:"lag"`
	Rebuilding      *int      `json:"rebuilding,omitempty"`
	RebuildPosition *int64    `json:"rebuild_position,omitempty"`
	LastError       *string   `json:"last_error,omitempty"`
	UpdatedAt       time.Time `json:"updated_at"`
}

func newProjectionsCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "projections",
		Short: "Read models: status and rebuild (directly against the database)",
	}
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Position, lag, generation and last error of every read model",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			srv, err := g.resolveDatabase(ctx, devdb.PrivateNever, false)
			if err != nil {
				return err
			}
			pool, err := eventstore.Connect(ctx, srv.URL, eventstore.ConnectOptions{MaxConns: 2, ApplicationName: "tunnelplane-projections"})
			if err != nil {
				return err
			}
			defer pool.Close()
			var head int64
			if err := pool.QueryRow(ctx, `SELECT next_position FROM log_head`).Scan(&head); err != nil {
				return fmt.Errorf("projections status: %w", err)
			}
			rows, err := pool.Query(ctx, `SELECT name, generation, position, rebuilding, rebuild_position, last_error, updated_at
				FROM projection_state ORDER BY name`)
			if err != nil {
				return fmt.Errorf("projections status: %w", err)
			}
			var out []projectionState
			for rows.Next() {
				var s projectionState
				if err := rows.Scan(&s.Name, &s.Generation, &s.Position, &s.Rebuilding, &s.RebuildPosition, &s.LastError, &s.UpdatedAt); err != nil {
					rows.Close()
					return fmt.Errorf("projections status: %w", err)
				}
				s.Lag = head - 1 - s.Position
				out = append(out, s)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("projections status: %w", err)
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"head": head, "projections": out})
			}
			if len(out) == 0 {
				fmt.Fprintln(g.stdout, "no projection has run yet (start `tunnelplane control`)")
				return nil
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tGENERATION\tPOSITION\tLAG\tREBUILDING\tUPDATED\tLAST ERROR")
			for _, s := range out {
				rebuilding, lastErr := "", ""
				if s.Rebuilding != nil {
					rebuilding = fmt.Sprintf("generation %d", *s.Rebuilding)
				}
				if s.LastError != nil {
					lastErr = *s.LastError
				}
				if s.Lag < 0 {
					lastErr = "AHEAD OF THE LOG: the log was rolled back after this read model saw it " + lastErr
				}
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\n", s.Name, s.Generation, s.Position, s.Lag, rebuilding, short(s.UpdatedAt), lastErr)
			}
			return tw.Flush()
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	rebuild := &cobra.Command{
		Use:   "rebuild NAME",
		Short: "Replay the whole log into a fresh generation of a read model and swap it in without downtime",
		Long: `rebuild replays the log from position 0 into a new generation of the read model's tables while the
current generation keeps serving reads (and a running control plane keeps applying new events), then
switches to the new generation in one transaction. Progress goes to stderr. Names: orgs, tunnels,
nodes, agent_tokens, role_assignments, audit.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			srv, err := g.resolveDatabase(ctx, devdb.PrivateNever, false)
			if err != nil {
				return err
			}
			if err := migrations.Up(ctx, srv.URL); err != nil {
				return err
			}
			pool, err := eventstore.Connect(ctx, srv.URL, eventstore.ConnectOptions{MaxConns: 4, ApplicationName: "tunnelplane-rebuild"})
			if err != nil {
				return err
			}
			defer pool.Close()
			reg, err := controlapp.DomainRegistry()
			if err != nil {
				return err
			}
			// Read-only: a rebuild reads the log and writes only read-model tables.
			st, err := eventstore.New(eventstore.Config{Pool: pool, Registry: reg, Logger: g.log})
			if err != nil {
				return err
			}
			runner, err := projections.New(projections.Config{Store: st, Projections: projections.All(), Logger: g.log})
			if err != nil {
				return err
			}
			started := time.Now()
			last := time.Time{}
			res, err := runner.Rebuild(ctx, args[0], func(p projections.RebuildProgress) {
				if time.Since(last) < time.Second && p.Applied < p.Head {
					return
				}
				last = time.Now()
				fmt.Fprintf(g.stderr, "rebuild %s: %d of %d records (%.0f%%), %.0f records/s\n", args[0], p.Applied, p.Head,
					100*float64(p.Applied)/float64(max(p.Head, 1)), float64(p.Applied)/max(time.Since(started).Seconds(), 1e-3))
			})
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			fmt.Fprintf(g.stdout, "rebuilt %s: generation %d at position %d in %.1fs\n", res.Name, res.Generation, res.Position, time.Since(started).Seconds())
			return nil
		},
	}
	rebuild.Flags().BoolVar(&asJSON, "json", false, "print the final status as JSON")
	cmd.AddCommand(status, rebuild)
	return cmd
}

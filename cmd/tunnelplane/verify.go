package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/devdb"
)

func newVerifyCommand(g *globals) *cobra.Command {
	var from, to uint64
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the whole log: hashes, positions, signatures, key history and checkpoints",
		Long: `verify recomputes every hash of the event log, checks that positions are contiguous,
checks every signature against the key in force at its position and every signed checkpoint's
Merkle root. Exit status: 0 intact, 1 damaged (the first bad position is named), 2 could not run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			srv, err := g.resolveDatabase(ctx, devdb.PrivateNever, false)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			pool, err := eventstore.Connect(ctx, srv.URL, eventstore.ConnectOptions{ApplicationName: "tunnelplane-verify"})
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			defer pool.Close()
			opts := eventstore.VerifyOptions{From: from, ProgressEvery: 2 * time.Second,
				Progress: func(p eventstore.VerifyProgress) {
					fmt.Fprintf(g.stderr, "verify: %d of %d records (%.0f%%), %.0f records/s\n",
						p.Verified, p.Total, 100*float64(p.Verified)/float64(max(p.Total, 1)), float64(p.Verified)/p.Elapsed.Seconds())
				}}
			if flagChanged(cmd.Flags(), "to") {
				opts.To = &to
			}
			rep, err := eventstore.Verify(ctx, pool, opts)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if asJSON {
				out := struct {
					OK bool `json:"ok"`
					eventstore.VerifyReport
				}{rep.OK(), rep}
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(out); err != nil {
					return &exitError{code: 2, err: err}
				}
			} else if rep.OK() {
				fmt.Fprintf(g.stdout, "ok: %d records verified (positions %d..%d), %d checkpoints, %d keys, %.1fs (%.0f records/s)\n",
					rep.Count, rep.From, rep.To, rep.Checkpoints, len(rep.Keys), rep.Seconds, rep.PerSecond)
				fmt.Fprintf(g.stdout, "head hash: %s\n", rep.HeadHash)
			} else {
				fmt.Fprintf(g.stdout, "FAILED at position %d: %s: %s\n", rep.Failure.Position, rep.Failure.Kind, rep.Failure.Detail)
				fmt.Fprintf(g.stdout, "records %d..%d verified before the failure\n", rep.From, rep.From+rep.Count)
			}
			if !rep.OK() {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().Uint64Var(&from, "from", 0, "first position to verify (starts at the newest checkpoint at or before it)")
	cmd.Flags().Uint64Var(&to, "to", 0, "last position to verify (default: the head)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

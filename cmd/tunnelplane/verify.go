package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/devdb"
)

func newVerifyCommand(g *globals) *cobra.Command {
	var from, to uint64
	var asJSON bool
	var checkpointFile string
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the whole log: hashes, positions, signatures, key history and checkpoints",
		Long: `verify recomputes every hash of the event log, checks that positions are contiguous,
checks every signature against the key in force at its position and every signed checkpoint's
Merkle root, and that no record lies past the head. It prints the log's current checkpoint (a
signed note): save it somewhere the database's administrators cannot write, and later run
verify --checkpoint FILE, which checks the note's signature and that the log still extends it
(an RFC 6962 consistency proof from its size to the head, computed from the records): a log
truncated, rolled back or rewritten since fails even if it was re-signed with the real key.
Exit status: 0 intact, 1 damaged (the first bad position is named) or inconsistent with the
checkpoint, 2 could not run.`,
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
			var saved string
			if checkpointFile != "" {
				raw, err := os.ReadFile(checkpointFile)
				if err != nil {
					return &exitError{code: 2, err: fmt.Errorf("--checkpoint: %w", err)}
				}
				saved = string(raw)
			}
			rep, err := eventstore.Verify(ctx, pool, opts)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			var cc *checkpointCheck
			if saved != "" && rep.OK() {
				if cc, err = checkSavedCheckpoint(ctx, pool, checkpointFile, saved); err != nil {
					return &exitError{code: 2, err: err}
				}
			}
			current := ""
			if rep.OK() && opts.To == nil { // the head was verified: its checkpoint is worth keeping
				if current, err = eventstore.CurrentCheckpoint(ctx, pool); err != nil {
					return &exitError{code: 2, err: err}
				}
			}
			failed := !rep.OK() || (cc != nil && !cc.OK)
			if asJSON {
				out := struct {
					OK bool `json:"ok"`
					eventstore.VerifyReport
					SavedCheckpoint *checkpointCheck `json:"saved_checkpoint,omitempty"`
					Checkpoint      string           `json:"checkpoint,omitempty"`
				}{!failed, rep, cc, current}
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(out); err != nil {
					return &exitError{code: 2, err: err}
				}
			} else if rep.OK() {
				fmt.Fprintf(g.stdout, "ok: %d records verified (positions %d..%d), %d checkpoints, %d keys, %.1fs (%.0f records/s)\n",
					rep.Count, rep.From, rep.To, rep.Checkpoints, len(rep.Keys), rep.Seconds, rep.PerSecond)
				fmt.Fprintf(g.stdout, "head hash: %s\n", rep.HeadHash)
				printKeyHistory(g.stdout, rep.Keys)
			} else {
				fmt.Fprintf(g.stdout, "FAILED at position %d: %s: %s\n", rep.Failure.Position, rep.Failure.Kind, rep.Failure.Detail)
				fmt.Fprintf(g.stdout, "records %d..%d verified before the failure\n", rep.From, rep.From+rep.Count)
			}
			if !asJSON && cc != nil {
				if cc.OK {
					fmt.Fprintf(g.stdout, "ok: the log extends the checkpoint in %s (size %d → %d)\n", checkpointFile, cc.Size, cc.HeadSize)
				} else {
					fmt.Fprintf(g.stdout, "FAILED: the checkpoint in %s (size %d): %s\n", checkpointFile, cc.Size, cc.Problem)
				}
			}
			if !asJSON && current != "" && !failed {
				fmt.Fprintf(g.stdout, "checkpoint (save it elsewhere; check later with verify --checkpoint FILE):\n%s", current)
			}
			if failed {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().Uint64Var(&from, "from", 0, "first position to verify (starts at the newest checkpoint at or before it)")
	cmd.Flags().Uint64Var(&to, "to", 0, "last position to verify (default: the head)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.Flags().StringVar(&checkpointFile, "checkpoint", "", "a checkpoint note saved earlier (verify's output or GET /api/v1/log): check that the log still extends it")
	return cmd
}

// printKeyHistory lists which key signed which positions; a log key with its C2SP note verifier
// key, which standard tooling (golang.org/x/mod/sumdb/note) opens the checkpoints with.
func printKeyHistory(w io.Writer, keys []eventstore.KeyInfo) {
	fmt.Fprintln(w, "key history (positions each key may sign):")
	for _, k := range keys {
		until := "now"
		if k.ValidUntil != nil {
			until = strconv.FormatUint(*k.ValidUntil-1, 10)
		}
		fmt.Fprintf(w, "  %-5s %s  %d..%s", k.Purpose, k.KeyID, k.ValidFrom, until)
		if k.Owner != "" {
			fmt.Fprintf(w, "  owner %s", k.Owner)
		}
		fmt.Fprintln(w)
		if k.VerifierKey != "" {
			fmt.Fprintf(w, "        verifier key: %s\n", k.VerifierKey)
		}
	}
	for _, k := range keys {
		if k.Purpose == eventstore.PurposeLog && k.ValidUntil == nil {
			fmt.Fprintf(w, "log key in force (C2SP note verifier key, opens the checkpoint below): %s\n", k.VerifierKey)
		}
	}
}

// checkpointCheck is the outcome of verify --checkpoint.
type checkpointCheck struct {
	File     string `json:"file"`
	OK       bool   `json:"ok"`
	Size     uint64 `json:"size"`
	HeadSize uint64 `json:"head_size,omitempty"`
	// Proof is the RFC 6962 consistency proof from Size to HeadSize (hex hashes).
	Proof   []string `json:"proof,omitempty"`
	Problem string   `json:"problem,omitempty"`
}

// checkSavedCheckpoint runs eventstore.CheckCheckpoint; a note that does not verify or a log that
// does not extend it is a failed check, anything else an error.
func checkSavedCheckpoint(ctx context.Context, pool *pgxpool.Pool, file, note string) (*checkpointCheck, error) {
	signed, c, err := eventstore.CheckCheckpoint(ctx, pool, note)
	cc := &checkpointCheck{File: file, Size: signed.Size}
	switch {
	case err == nil:
		cc.OK, cc.HeadSize = true, c.HeadSize
		for _, h := range c.Proof {
			cc.Proof = append(cc.Proof, hex.EncodeToString(h))
		}
	case errors.Is(err, eventstore.ErrInconsistent), errors.Is(err, eventstore.ErrCheckpoint):
		cc.Problem = err.Error()
	default:
		return nil, err
	}
	return cc, nil
}

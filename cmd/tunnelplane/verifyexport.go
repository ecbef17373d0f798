package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/compliance/evidence"
)

func newVerifyExportCommand(g *globals) *cobra.Command {
	var trustedFile, vkey string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify-export BUNDLE",
		Short: "Check an evidence bundle offline: records, chain, signatures, proofs, key history, manifest",
		Long: `verify-export checks an evidence bundle written by export, with no database and no network:
every record's hash, the chain within the window, every producer signature against the key in
force at its position, the key history, each record's inclusion proof, the checkpoints' signatures
and roots, the consistency proof between them, and the manifest's signature and file hashes.
--trusted-checkpoint FILE (a checkpoint saved earlier: verify's output, GET /api/v1/log) also
checks that the bundle's log extends it, which catches a log rolled back or rewritten since, even
one re-signed with the real key. --vkey pins the log key you trust (a C2SP note verifier key).
Exit status: 0 intact, 1 damaged (what and where are named), 2 could not run.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var opts evidence.VerifyOptions
			opts.VerifierKey = vkey
			if trustedFile != "" {
				b, err := os.ReadFile(trustedFile)
				if err != nil {
					return &exitError{code: 2, err: fmt.Errorf("--trusted-checkpoint: %w", err)}
				}
				opts.TrustedCheckpoint = string(b)
			}
			f, err := os.Open(args[0])
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			defer f.Close()
			rep, err := evidence.Verify(f, opts)
			if errors.Is(err, evidence.ErrBundle) {
				rep.Problems = []evidence.Problem{{File: args[0], Kind: "unreadable", Detail: err.Error()}}
			} else if err != nil {
				return &exitError{code: 2, err: err}
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(struct {
					OK bool `json:"ok"`
					evidence.Report
				}{rep.OK(), rep}); err != nil {
					return &exitError{code: 2, err: err}
				}
			} else if rep.OK() {
				m := rep.Manifest
				fmt.Fprintf(g.stdout, "ok: %d records of log %s (window %d..%d), checkpoints %d and %d, manifest signed by %s\n",
					m.Records, m.Origin, m.From, m.To, m.WindowCheckpoint, m.NewestCheckpoint, m.LogKeyID)
				if rep.TrustedSize > 0 {
					fmt.Fprintf(g.stdout, "ok: the bundle's log extends the trusted checkpoint in %s (size %d → %d)\n", trustedFile, rep.TrustedSize, m.NewestCheckpoint)
				}
			} else {
				for _, p := range rep.Problems {
					fmt.Fprintf(g.stdout, "FAILED: %s\n", p)
				}
			}
			if !rep.OK() {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&trustedFile, "trusted-checkpoint", "", "a checkpoint note saved earlier: the bundle's log must extend it")
	cmd.Flags().StringVar(&vkey, "vkey", "", "the log key you trust, as a C2SP note verifier key (origin+hash+base64)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

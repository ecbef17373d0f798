package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/compliance/evidence"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
)

func newExportCommand(g *globals) *cobra.Command {
	var from, to, out, org string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "export --from N|TIME --to M|TIME [--org ORG_ID] --out bundle.tar.zst",
		Short: "Write an evidence bundle of a window of the log, for checking offline with verify-export",
		Long: `export writes the records of a window of the log (positions, or RFC 3339 times: the records
recorded between them) with what an auditor needs to check them without the database: the signed
checkpoint covering the window and the newest one, an inclusion proof per record, a consistency
proof between the two checkpoints, the key history, the leaf hashes of the whole log and a
manifest signed by the log key (docs/event-format.md). It appends export.created (who, window,
bundle hash) to the log. With --org the bundle holds that organization's records in full and only
the leaf hashes of the window's others, which still prove nothing of the organization was left
out. Check the bundle with verify-export.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("--out is required")
			}
			var w evidence.Window
			var err error
			if w.From, w.FromTime, err = positionOrTime("--from", from); err != nil {
				return err
			}
			if w.To, w.ToTime, err = positionOrTime("--to", to); err != nil {
				return err
			}
			w.OrgID = org
			ctx := cmd.Context()
			h, err := openLog(ctx, g, 4)
			if err != nil {
				return err
			}
			defer h.Close()
			key, err := controlapp.LogKeyForInit(ctx, h.LogKeys, h.Pool)
			if err != nil {
				return err
			}
			res, err := evidence.Export(ctx, evidence.ExportConfig{Pool: h.Pool, Log: h.Store, Key: key, Actor: localActor(), Personal: h.Personal}, w, out)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			m := res.Manifest
			fmt.Fprintf(g.stdout, "wrote %s: %d records (positions %d..%d), checkpoints %d and %d, %d bytes\n",
				out, m.Records, m.From, m.To, m.WindowCheckpoint, m.NewestCheckpoint, res.Bytes)
			fmt.Fprintf(g.stdout, "sha256 %s, recorded as export %s at position %d\n", res.BundleSHA256, m.ExportID, res.Position)
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "first position, or an RFC 3339 time (the first record recorded at or after it)")
	cmd.Flags().StringVar(&to, "to", "", "last position, or an RFC 3339 time (the last record recorded at or before it)")
	cmd.Flags().StringVar(&out, "out", "", "the bundle file to write (tar compressed with zstd)")
	cmd.Flags().StringVar(&org, "org", "", "an organization's id: its records in full, the window's others only as leaf hashes")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// positionOrTime reads a window bound: a position or an RFC 3339 time.
func positionOrTime(flag, v string) (uint64, *time.Time, error) {
	if v == "" {
		return 0, nil, fmt.Errorf("%s is required (a position or an RFC 3339 time)", flag)
	}
	if p, err := strconv.ParseUint(v, 10, 64); err == nil {
		return p, nil, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %q: want a position or an RFC 3339 time", flag, v)
	}
	return 0, &t, nil
}

// localActor names who runs an offline command, for the record it appends.
func localActor() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "local:" + u.Username
	}
	return "local:uid-" + strconv.Itoa(os.Getuid())
}

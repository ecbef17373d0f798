package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/compliance/exportjobs"
)

// exportsCommand: evidence exports through the API (the control plane writes the bundle).
func (a *adminClient) exportsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "exports", Short: "Evidence bundles written by the control plane, downloaded through the API"}
	var from, to, org, out string
	var wait bool
	create := &cobra.Command{
		Use: "create --from N|TIME --to M|TIME [--org ORG] [--wait [--out FILE]]", Short: "Ask the control plane for an evidence bundle of a window of the log",
		Long: `create asks for the bundle "tunnelplane export" writes, made by the control plane in the background
(one at a time) and kept in its data dir: the whole log (superadmins) or an organization's (its
owners, admins and auditors). The log records who asked (export.created). --wait polls until it
is done; --out then downloads it. Check it with verify-export.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || to == "" {
				return fmt.Errorf("--from and --to are required (positions or RFC 3339 times)")
			}
			if out != "" && !wait {
				return fmt.Errorf("--out needs --wait (or run download once it is done)")
			}
			raw, err := a.call(cmd.Context(), http.MethodPost, "/api/v1/exports", nil, api.ExportInput{From: api.Bound(from), To: api.Bound(to), Org: org})
			if err != nil {
				return err
			}
			var j exportjobs.Job
			if err := json.Unmarshal(raw, &j); err != nil {
				return err
			}
			if !wait {
				return a.showExport(raw, j)
			}
			if j, err = a.waitExport(cmd.Context(), j.ID); err != nil {
				return err
			}
			if j.State != exportjobs.StateDone {
				return fmt.Errorf("export %s failed: %s", j.ID, j.Error)
			}
			if out != "" {
				return a.downloadExport(cmd.Context(), j.ID, out)
			}
			raw, _ = json.Marshal(j)
			return a.showExport(raw, j)
		},
	}
	create.Flags().StringVar(&from, "from", "", "first position, or an RFC 3339 time")
	create.Flags().StringVar(&to, "to", "", "last position, or an RFC 3339 time")
	create.Flags().StringVar(&org, "org", "", "an organization (name or id): its records in full, the others as leaf hashes; default the whole log")
	create.Flags().BoolVar(&wait, "wait", false, "wait until the export is done (progress on stderr)")
	create.Flags().StringVar(&out, "out", "", "with --wait: download the bundle to this file")
	list := &cobra.Command{
		Use: "list", Short: "Exports this control plane instance ran or runs, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if org != "" {
				q.Set("org", org)
			}
			raw, err := a.call(cmd.Context(), http.MethodGet, "/api/v1/exports", q, nil)
			if err != nil {
				return err
			}
			var l api.List[exportjobs.Job]
			if err := json.Unmarshal(raw, &l); err != nil {
				return err
			}
			rows := make([][]string, len(l.Items))
			for i, j := range l.Items {
				rows[i] = []string{j.ID, j.State, progressOf(j), orgOrLog(j.OrgID), j.From + ".." + j.To, j.RequestedBy, short(j.CreatedAt)}
			}
			return a.table(l.Items, "ID\tSTATE\tPROGRESS\tSCOPE\tWINDOW\tREQUESTED BY\tCREATED", rows)
		},
	}
	list.Flags().StringVar(&org, "org", "", `organization name or id, or "*" for every export (superadmins); default your only organization`)
	get := &cobra.Command{
		Use: "get ID", Short: "One export: state, progress, and once done its window, size and SHA-256", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := a.call(cmd.Context(), http.MethodGet, "/api/v1/exports/"+url.PathEscape(args[0]), nil, nil)
			if err != nil {
				return err
			}
			var j exportjobs.Job
			if err := json.Unmarshal(raw, &j); err != nil {
				return err
			}
			return a.showExport(raw, j)
		},
	}
	download := &cobra.Command{
		Use: "download ID --out FILE", Short: "Download a finished export's bundle (checked against its SHA-256)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("--out is required")
			}
			return a.downloadExport(cmd.Context(), args[0], out)
		},
	}
	download.Flags().StringVar(&out, "out", "", "the file to write")
	cmd.AddCommand(create, list, get, download)
	return cmd
}

func orgOrLog(org string) string {
	if org == "" {
		return "whole log"
	}
	return org
}

func progressOf(j exportjobs.Job) string {
	if j.RecordsTotal == 0 {
		return "-"
	}
	return fmt.Sprintf("%d/%d", j.RecordsDone, j.RecordsTotal)
}

func (a *adminClient) showExport(raw []byte, j exportjobs.Job) error {
	if a.asJSON {
		return a.printJSON(raw)
	}
	fmt.Fprintf(a.g.stdout, "export %s  %s  %s  window %s..%s  progress %s\n", j.ID, j.State, orgOrLog(j.OrgID), j.From, j.To, progressOf(j))
	switch {
	case j.State == exportjobs.StateDone:
		fmt.Fprintf(a.g.stdout, "positions %d..%d, %d records, %d bytes, sha256 %s, export.created at position %d (held by %s)\n",
			*j.FirstPosition, *j.LastPosition, j.Records, j.Bytes, j.BundleSHA256, *j.Position, j.Host)
	case j.Error != "":
		fmt.Fprintf(a.g.stdout, "error: %s\n", j.Error)
	}
	return nil
}

// waitExport polls an export until it is done or failed, with its progress on stderr.
func (a *adminClient) waitExport(ctx context.Context, id string) (exportjobs.Job, error) {
	var j exportjobs.Job
	for {
		raw, err := a.call(ctx, http.MethodGet, "/api/v1/exports/"+url.PathEscape(id), nil, nil)
		if err != nil {
			return j, err
		}
		if err := json.Unmarshal(raw, &j); err != nil {
			return j, err
		}
		if j.State == exportjobs.StateDone || j.State == exportjobs.StateFailed {
			return j, nil
		}
		fmt.Fprintf(a.g.stderr, "export %s: %s %s\n", id, j.State, progressOf(j))
		select {
		case <-ctx.Done():
			return j, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// downloadExport streams a bundle to out (through a temporary file, renamed once its SHA-256 is
// the one the control plane states).
func (a *adminClient) downloadExport(ctx context.Context, id, out string) error {
	if err := a.resolveToken(); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(a.baseURL, "/")+"/api/v1/exports/"+url.PathEscape(id)+"/bundle", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("User-Agent", "tunnelplane-cli/"+version)
	res, err := (&http.Client{}).Do(req)
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		var p api.Problem
		if json.Unmarshal(raw, &p) == nil && p.Status != 0 {
			return &problemError{p: p}
		}
		return fmt.Errorf("download: HTTP %d", res.StatusCode)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), ".download-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), res.Body)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if want := res.Header.Get("X-Bundle-SHA256"); want != sum || strconv.FormatInt(n, 10) != res.Header.Get("Content-Length") {
		return fmt.Errorf("download: got %d bytes with sha256 %s; the control plane states %s bytes with %s", n, sum, res.Header.Get("Content-Length"), want)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return err
	}
	fmt.Fprintf(a.g.stdout, "wrote %s: %d bytes, sha256 %s (as export.created recorded it); check it with verify-export\n", out, n, sum)
	return nil
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/login"
	"github.com/tunnelplane/tunnelplane/webhooks"
)

// adminClient calls the REST admin API.
type adminClient struct {
	g       *globals
	baseURL string
	token   string
	asJSON  bool
	idemKey string
	client  *http.Client
}

// problemError is a refusal by the API, with its problem details.
type problemError struct {
	p api.Problem
}

func (e *problemError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s: %s", e.p.Status, e.p.Title, e.p.Detail)
	for _, f := range e.p.Errors {
		line := f.Field + ": " + f.Message
		if !strings.Contains(e.p.Detail, line) { // the detail names a single problem itself
			fmt.Fprintf(&b, "\n  %s", line)
		}
	}
	if e.p.RequestID != "" {
		fmt.Fprintf(&b, "\n  (request id %s)", e.p.RequestID)
	}
	return b.String()
}

// resolveToken takes the token of --token or TUNNELPLANE_TOKEN, else the one `tunnelplane login`
// stored for this control plane.
func (a *adminClient) resolveToken() error {
	if a.token != "" {
		return nil
	}
	c, ok, err := login.Load(a.g.configDir, a.baseURL)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("no token: pass --token, set TUNNELPLANE_TOKEN or run `tunnelplane login` (bootstrap one with `tunnelplane admin token create`)")
	}
	a.token = c.Token
	return nil
}

// call sends one request and returns the response body of a 2xx answer.
func (a *adminClient) call(ctx context.Context, method, path string, q url.Values, body any, headers ...string) ([]byte, error) {
	if err := a.resolveToken(); err != nil {
		return nil, err
	}
	base, err := url.Parse(a.baseURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("--api-url %q: want http(s)://host:port", a.baseURL)
	}
	u := strings.TrimSuffix(a.baseURL, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Accept", "application/json, application/problem+json")
	req.Header.Set("User-Agent", "tunnelplane-cli/"+version)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.idemKey != "" && method != http.MethodGet {
		req.Header.Set("Idempotency-Key", a.idemKey)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	// A CLI run makes a handful of requests; no connection is kept for later.
	req.Close = true
	client := a.client
	if client == nil {
		client = &http.Client{Timeout: 60 * time.Second}
	}
	res, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if res.StatusCode >= 200 && res.StatusCode < 300 {
		return raw, nil
	}
	var p api.Problem
	if json.Unmarshal(raw, &p) == nil && p.Status != 0 {
		return nil, &problemError{p: p}
	}
	return nil, fmt.Errorf("%s %s: HTTP %d: %s", method, path, res.StatusCode, strings.TrimSpace(string(raw)))
}

// get decodes a GET. Reads wait for everything the log holds (wait_for=latest), so a command
// run right after another sees its effect; when the read models do not catch up in time (the API
// waits at most 10s), it reads what they hold, with a warning.
func (a *adminClient) get(ctx context.Context, path string, q url.Values, out any) ([]byte, error) {
	if q == nil {
		q = url.Values{}
	}
	q.Set("wait_for", "latest")
	raw, err := a.call(ctx, http.MethodGet, path, q, nil)
	var pe *problemError
	if errors.As(err, &pe) && pe.p.Type == domain.ProblemTypeBase+"not-caught-up" {
		// A burst of writes keeps the read models behind: show what they hold, and say so.
		fmt.Fprintf(a.g.stderr, "warning: the read models are behind the log (%s); showing what they hold\n", pe.p.Detail)
		q.Del("wait_for")
		raw, err = a.call(ctx, http.MethodGet, path, q, nil)
	}
	if err != nil {
		return nil, err
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, fmt.Errorf("GET %s: %w", path, err)
		}
	}
	return raw, nil
}

// listAll follows next_cursor until the list ends or max items were read (max 0: all).
func listAll[T any](ctx context.Context, a *adminClient, path string, q url.Values, max int) ([]T, error) {
	if q == nil {
		q = url.Values{}
	}
	var out []T
	for {
		limit := api.MaxLimit
		if max > 0 && max-len(out) < limit {
			limit = max - len(out)
		}
		q.Set("limit", fmt.Sprint(limit))
		var page api.List[T]
		if _, err := a.get(ctx, path, q, &page); err != nil {
			return nil, err
		}
		out = append(out, page.Items...)
		if page.NextCursor == "" || (max > 0 && len(out) >= max) {
			return out, nil
		}
		q.Set("cursor", page.NextCursor)
	}
}

// write sends a command and prints its outcome.
func (a *adminClient) write(ctx context.Context, what, method, path string, q url.Values, body any, headers ...string) (commands.Result, error) {
	raw, err := a.call(ctx, method, path, q, body, headers...)
	if err != nil {
		return commands.Result{}, err
	}
	var res commands.Result
	if err := json.Unmarshal(raw, &res); err != nil {
		return commands.Result{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if a.asJSON {
		return res, a.printJSON(raw)
	}
	switch {
	case res.Noop:
		fmt.Fprintf(a.g.stdout, "%s: nothing to change", what)
	case res.ID != "":
		fmt.Fprintf(a.g.stdout, "%s %s", what, res.ID)
	default:
		fmt.Fprint(a.g.stdout, what)
	}
	if res.Version > 0 {
		fmt.Fprintf(a.g.stdout, "  version %d", res.Version)
	}
	fmt.Fprintf(a.g.stdout, "  position %d\n", res.Position)
	if res.Token != "" {
		fmt.Fprintf(a.g.stdout, "expires: %s (the token is shown once)\n", res.ExpiresAt.UTC().Format(time.RFC3339))
		fmt.Fprintln(a.g.stdout, res.Token)
	}
	if res.Secret != "" {
		what := "key"
		switch {
		case strings.HasPrefix(res.Secret, domain.EnrollmentTokenPrefix):
			what = "token"
		case strings.HasPrefix(res.Secret, webhooks.SecretPrefix):
			what = "signing secret"
		}
		if res.ExpiresAt != nil {
			fmt.Fprintf(a.g.stdout, "expires: %s (the %s is shown once)\n", res.ExpiresAt.UTC().Format(time.RFC3339), what)
		} else {
			fmt.Fprintf(a.g.stdout, "(the %s is shown once)\n", what)
		}
		fmt.Fprintln(a.g.stdout, res.Secret)
	}
	return res, nil
}

func (a *adminClient) printJSON(raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		_, err = a.g.stdout.Write(raw)
		return err
	}
	buf.WriteByte('\n')
	_, err := a.g.stdout.Write(buf.Bytes())
	return err
}

// table prints rows under a header, or the items as JSON with --json.
func (a *adminClient) table(items any, header string, rows [][]string) error {
	if a.asJSON {
		raw, err := json.Marshal(map[string]any{"items": items})
		if err != nil {
			return err
		}
		return a.printJSON(raw)
	}
	tw := tabwriter.NewWriter(a.g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

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
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
)

// maxUserTokenTTL bounds `admin token create --ttl`.
const maxUserTokenTTL = 90 * 24 * time.Hour

func newAdminCommand(g *globals) *cobra.Command {
	a := &adminClient{g: g}
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Operate the control plane: bootstrap tokens offline, everything else through the REST API",
		Long: `admin token create works offline against the database and the data dir (it bootstraps a fresh
install). Every other admin command calls the REST admin API at --api-url with the bearer token
--token; it prints a table, or the API's JSON with --json, and exits non-zero with the problem
detail when the API refuses.`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&a.baseURL, "api-url", envDefault("API_URL", "http://"+defaultAPIAddr), "admin API base URL (env TUNNELPLANE_API_URL)")
	pf.StringVar(&a.token, "token", envDefault("TOKEN", ""), "bearer token (env TUNNELPLANE_TOKEN)")
	pf.BoolVar(&a.asJSON, "json", false, "print the API's JSON")
	pf.StringVar(&a.idemKey, "idempotency-key", "", "Idempotency-Key for a command: a retry with the same key does not repeat it")
	cmd.AddCommand(newAdminTokenCommand(g), a.orgsCommand(), a.tunnelsCommand(), a.nodesCommand(), a.tokensCommand(), a.rolesCommand(),
		a.keysCommand(), a.auditCommand())
	return cmd
}

func newAdminTokenCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "User tokens for the admin API"}
	var org, subject, role string
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create",
		Short: "Grant a role and mint a user token (offline: database and data dir); the token is the last line",
		Long: `token create works against the database and the data dir directly, without a running control
plane: it makes sure USER holds ROLE (in --org, or platform-wide for --role superadmin), recording
the grant as an event by "cli:<os user>", and prints a token signed with the control plane's token
key. The token is the last line of the output:

  TOKEN=$(tunnelplane admin token create --user root --role superadmin | tail -1)

--org accepts the organization's name or id; creating an organization needs a superadmin token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if subject == "" {
				return errors.New("--user is required")
			}
			r := domain.Role(role)
			switch {
			case role == "":
				return errors.New("--role is required (owner, admin, operator, viewer, auditor or superadmin)")
			case r == domain.RoleSuperadmin && org != "":
				return errors.New("--role superadmin is platform-wide: leave out --org")
			case r != domain.RoleSuperadmin && org == "":
				return fmt.Errorf("--org is required for --role %s", role)
			case r != domain.RoleSuperadmin && !domain.ValidRole(org, r):
				return fmt.Errorf("--role %q: want owner, admin, operator, viewer, auditor or superadmin", role)
			case ttl <= 0 || ttl > maxUserTokenTTL:
				return fmt.Errorf("--ttl %s: want more than 0 and at most %s", ttl, maxUserTokenTTL)
			}
			return createUserToken(cmd.Context(), g, org, subject, r, ttl)
		},
	}
	f := create.Flags()
	f.StringVar(&org, "org", "", "organization name or id (not for superadmin)")
	f.StringVar(&subject, "user", "", "user id (the token's subject)")
	f.StringVar(&role, "role", "", "owner, admin, operator, viewer, auditor or superadmin")
	f.DurationVar(&ttl, "ttl", 12*time.Hour, "token lifetime")
	cmd.AddCommand(create)
	return cmd
}

// cliActor is who the offline admin commands act as, for the audit log.
func cliActor() string {
	name := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	return "cli:" + name
}

func createUserToken(ctx context.Context, g *globals, org, subject string, role domain.Role, ttl time.Duration) error {
	h, err := openLog(ctx, g, 4)
	if err != nil {
		return err
	}
	defer h.Close()
	svc, err := newService(g, h, nil, 0)
	if err != nil {
		return err
	}
	defer svc.Stop()
	orgID, orgName := domain.PlatformOrg, "the platform"
	if org != "" {
		if orgID, err = resolveOrgOffline(ctx, h, org); err != nil {
			return err
		}
		orgName = "organization " + orgID
	}
	actx := commands.WithActor(ctx, commands.Actor{ID: cliActor()})
	res, err := svc.GrantDirect(actx, commands.AssignRole{OrgID: orgID, UserID: subject, Role: role})
	if err != nil {
		return fmt.Errorf("grant %s to %s: %w", role, subject, err)
	}
	key, err := svc.EnsureTokenKey(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	raw, err := token.MintUser(key, token.DefaultIssuer, subject, "", ttl, now)
	if err != nil {
		return err
	}
	state := fmt.Sprintf("granted at position %d", res.Position)
	if res.Noop {
		state = "already held"
	}
	fmt.Fprintf(g.stdout, "role:    %s of %s for %s (%s)\n", role, orgName, subject, state)
	fmt.Fprintf(g.stdout, "key:     %s\n", key.ID())
	fmt.Fprintf(g.stdout, "expires: %s\n", now.Add(ttl).UTC().Format(time.RFC3339))
	fmt.Fprintln(g.stdout, raw)
	return nil
}

// resolveOrgOffline maps an organization name or id to its id from the log itself (the name
// reservation stream), which is authoritative even when no projection runs.
func resolveOrgOffline(ctx context.Context, h *logHandle, ref string) (string, error) {
	if domain.ValidID(ref) {
		recs, err := h.Store.ReadStream(ctx, domain.OrgStream(ref), 1, 1)
		if err != nil {
			return "", err
		}
		if len(recs) == 0 {
			return "", fmt.Errorf("organization %s: %w", ref, domain.ErrNotFound)
		}
		return ref, nil
	}
	recs, err := h.Store.ReadStream(ctx, domain.OrgNameStream(ref), 1, 1)
	if err != nil {
		return "", err
	}
	if len(recs) == 0 {
		return "", fmt.Errorf("organization %q: %w (create it with `tunnelplane admin orgs create %s` and a superadmin token)", ref, domain.ErrNotFound, ref)
	}
	var p domain.OrgNameReserved
	if err := json.Unmarshal(recs[0].Payload, &p); err != nil {
		return "", fmt.Errorf("organization %q: %w", ref, err)
	}
	return p.OrgID, nil
}

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
		fmt.Fprintf(&b, "\n  %s: %s", f.Field, f.Message)
	}
	if e.p.RequestID != "" {
		fmt.Fprintf(&b, "\n  (request id %s)", e.p.RequestID)
	}
	return b.String()
}

// call sends one request and returns the response body of a 2xx answer.
func (a *adminClient) call(ctx context.Context, method, path string, q url.Values, body any, headers ...string) ([]byte, error) {
	if a.token == "" {
		return nil, errors.New("no token: pass --token or set TUNNELPLANE_TOKEN (bootstrap one with `tunnelplane admin token create`)")
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
// run right after another sees its effect.
func (a *adminClient) get(ctx context.Context, path string, q url.Values, out any) ([]byte, error) {
	if q == nil {
		q = url.Values{}
	}
	q.Set("wait_for", "latest")
	raw, err := a.call(ctx, http.MethodGet, path, q, nil)
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

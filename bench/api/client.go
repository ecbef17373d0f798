package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
)

// bench is a run against one control plane.
type bench struct {
	progress io.Writer
	sys      *System
	opts     Options
	client   *http.Client
	orgs     []string // ids
	tokens   []string // one owner token per org
}

// setup makes the organizations through the API, each with an owner whose token its clients use.
func (b *bench) setup(ctx context.Context) error {
	sys := commands.WithActor(ctx, commands.Actor{ID: "system:bench"})
	if _, err := b.sys.Service.GrantDirect(sys, commands.AssignRole{OrgID: domain.PlatformOrg, UserID: "bench-root", Role: domain.RoleSuperadmin}); err != nil {
		return err
	}
	root, err := b.mint("bench-root")
	if err != nil {
		return err
	}
	for i := range b.opts.Orgs {
		var res commands.Result
		owner := ownerOf(i)
		if err := b.do(ctx, root, "POST", "/api/v1/orgs", map[string]string{"name": fmt.Sprintf("bench-%d", i), "owner": owner}, &res); err != nil {
			return fmt.Errorf("bench api: create org: %w", err)
		}
		tok, err := b.mint(owner)
		if err != nil {
			return err
		}
		b.orgs, b.tokens = append(b.orgs, res.ID), append(b.tokens, tok)
	}
	return nil
}

func ownerOf(org int) string { return fmt.Sprintf("bench-owner-%d", org) }

func (b *bench) mint(user string) (string, error) {
	return token.MintUser(b.sys.Service.TokenKey(), token.DefaultIssuer, user, "", 2*time.Hour, time.Now())
}

// do sends one request; a non-2xx answer is an error.
func (b *bench) do(ctx context.Context, tok, method, path string, body, out any) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, b.sys.URL+path, bytes.NewReader(raw))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	res, err := b.client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, res.StatusCode, data)
	}
	return json.Unmarshal(data, out)
}

// creates says whether a client's n-th command creates a tunnel (else it updates one of the
// tunnels it made): one create to three updates.
func creates(n int, mine []string) bool { return n%4 == 0 || len(mine) == 0 }

// updatedUpstream is the upstream a client's n-th command sets.
func updatedUpstream(n int) string { return fmt.Sprintf("http://127.0.0.1:%d", 1024+n%60000) }

// failures counts failed commands and keeps the first error.
type failures struct {
	n     atomic.Int64
	first atomic.Value
}

func (f *failures) add(err error) {
	if f.n.Add(1) == 1 {
		f.first.Store(err)
	}
}

func (f *failures) count() int64 { return f.n.Load() }

func (f *failures) firstErr() error {
	err, _ := f.first.Load().(error)
	return err
}

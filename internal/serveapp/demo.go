package serveapp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/dataplane/demo"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
	"github.com/tunnelplane/tunnelplane/projections"
)

// Demo is the demo's upstream, tunnel and agent, and a token of the demo organization's owner.
type Demo struct {
	OrgID, TunnelID string
	UpstreamURL     string
	UserToken       string
	AgentToken      string
	AgentTokenID    string
	// TunnelURL is the tunnel under path routing on the node (…/t/llm.demo).
	TunnelURL string

	life     lifecycle.Lifecycle
	upstream *http.Server
}

// Stop stops the agent and the upstream.
func (d *Demo) Stop(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if d.upstream != nil {
		_ = d.upstream.Shutdown(sctx)
	}
	d.life.Stop()
}

// startDemo makes (or finds) organization "demo" with tunnel "llm" to a demo upstream and connects
// an agent through the node.
func startDemo(ctx context.Context, a *App, delay time.Duration) (_ *Demo, err error) {
	cp, rn, log := a.CP, a.Node, a.cfg.Logger
	d := &Demo{}
	defer func() {
		if err != nil {
			d.Stop(context.WithoutCancel(ctx))
		}
	}()
	connected := make(chan struct{}, 1)
	err = d.life.Start(ctx, "demo", func(runCtx context.Context) error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		h, err := demo.New(demo.Config{TokenDelay: delay, Answer: true, Logger: log})
		if err != nil {
			_ = ln.Close()
			return err
		}
		d.upstream = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		srv := d.upstream
		d.life.Go(func(ctx context.Context) {
			stop := context.AfterFunc(ctx, func() { _ = srv.Close() }) // a failed start: no Shutdown comes
			defer stop()
			_ = srv.Serve(ln)
		})
		d.UpstreamURL = "http://" + ln.Addr().String()

		sys := commands.WithActor(ctx, commands.Actor{ID: Actor})
		svc := cp.Service
		if d.OrgID, err = demoOrg(ctx, sys, cp); err != nil {
			return err
		}
		err = cp.Log.Pool.QueryRow(ctx, `SELECT tunnel_id::text FROM tunnels WHERE org_id = $1 AND name = 'llm' AND state = 'active'`, d.OrgID).Scan(&d.TunnelID)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			res, err := svc.Handlers.CreateTunnel.Handle(commands.WithActor(ctx, commands.Actor{ID: "demo"}), commands.CreateTunnel{OrgID: d.OrgID, Name: "llm", Upstream: d.UpstreamURL})
			if err != nil {
				return err
			}
			d.TunnelID = res.ID
		case err != nil:
			return err
		default:
			// The demo upstream listens on a new port each run.
			if _, err := svc.Handlers.UpdateTunnel.Handle(sys, commands.UpdateTunnel{OrgID: d.OrgID, TunnelID: d.TunnelID, Upstream: &d.UpstreamURL}); err != nil {
				return err
			}
		}
		issued, err := issueDemoAgentToken(sys, svc, d.OrgID, d.TunnelID, filepath.Join(a.cfg.Control.DataDir, "demo-agent-token-id"))
		if err != nil {
			return err
		}
		d.AgentToken, d.AgentTokenID = issued.Token, issued.ID
		// Let the node's view learn the tunnel and the token before the agent dials.
		head, err := cp.Log.Store.Head(ctx)
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := rn.View.WaitFor(wctx, head-1); err != nil {
			return fmt.Errorf("the node did not learn the demo tunnel: %w", err)
		}
		d.life.Go(func(runCtx context.Context) {
			_ = agent.Run(runCtx, agent.Config{NodeURL: rn.URL + "/v1/agent", Token: issued.Token, Upstream: d.UpstreamURL,
				HostKeyFingerprint: rn.Fingerprint, Version: a.cfg.Version, Logger: log,
				OnState: func(s agent.State, detail string) {
					log.Info("demo agent", "state", s.String(), "detail", detail)
					if s == agent.StateConnected {
						select {
						case connected <- struct{}{}:
						default:
						}
					}
				}})
		})
		select {
		case <-connected:
		case <-wctx.Done():
			return errors.New("the demo agent did not connect within 30s")
		}
		if d.UserToken, err = token.MintUser(svc.TokenKey(), token.DefaultIssuer, "demo", "Demo user", 24*time.Hour, time.Now()); err != nil {
			return err
		}
		d.TunnelURL = rn.URL + "/t/llm.demo"
		return nil
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// demoOrg finds or creates organization "demo" owned by user "demo".
func demoOrg(ctx, sys context.Context, cp *controlapp.App) (string, error) {
	var orgID string
	err := cp.Log.Pool.QueryRow(ctx, `SELECT org_id::text FROM orgs WHERE name = 'demo'`).Scan(&orgID)
	if err == nil {
		return orgID, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return "", err
	}
	res, err := cp.Service.Handlers.CreateOrganization.Handle(sys, commands.CreateOrganization{Name: "demo", Owner: "demo"})
	if errors.Is(err, domain.ErrConflict) {
		// Created a moment ago and not yet in the read model.
		head, herr := cp.Log.Store.Head(ctx)
		if herr != nil || head == 0 {
			head = 1
		}
		if err := cp.Runner.WaitFor(ctx, head-1, projections.Orgs); err != nil {
			return "", err
		}
		return demoOrg(ctx, sys, cp)
	}
	if err != nil {
		return "", err
	}
	if err := cp.Runner.WaitFor(ctx, res.Position, projections.Orgs, projections.Tunnels, projections.RoleAssignments); err != nil {
		return "", err
	}
	return res.ID, nil
}

// issueDemoAgentToken issues the demo agent's token and revokes the one the previous run issued
// (its id is kept in idFile; the token itself is never stored), so restarts do not pile up live
// 24-hour tokens.
func issueDemoAgentToken(sys context.Context, svc *commands.Service, orgID, tunnelID, idFile string) (commands.Result, error) {
	if b, err := os.ReadFile(idFile); err == nil {
		old := strings.TrimSpace(string(b))
		_, err := svc.Handlers.RevokeAgentToken.Handle(sys, commands.RevokeAgentToken{OrgID: orgID, TokenID: old, Reason: "replaced by the next demo run's token"})
		if err != nil && !errors.Is(err, domain.ErrNotFound) && !errors.Is(err, domain.ErrConflict) {
			return commands.Result{}, fmt.Errorf("revoke the previous demo agent token %s: %w", old, err)
		}
	}
	issued, err := svc.Handlers.IssueAgentToken.Handle(sys, commands.IssueAgentToken{OrgID: orgID, TunnelID: tunnelID, TTL: 24 * time.Hour})
	if err != nil {
		return commands.Result{}, err
	}
	tmp := idFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(issued.ID+"\n"), 0o600); err != nil {
		return commands.Result{}, err
	}
	return issued, os.Rename(tmp, idFile)
}

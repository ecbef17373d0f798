package agent

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// discovered is a node the control plane lists for the tunnel.
type discovered struct {
	ID          string `json:"id"`
	AgentURL    string `json:"agent_url"`
	Fingerprint string `json:"host_key_fingerprint"`
	Priority    int    `json:"priority"`
}

// discoveryURL is the tunnel's node list on the control plane: raw as given when it names a
// path, else raw + /api/v1/tunnels/{tunnel}/nodes with the tunnel the agent token names.
func discoveryURL(raw, agentToken string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q: want https://control.example.com", raw)
	}
	if u.Path != "" && u.Path != "/" {
		return u, nil
	}
	tunnel, err := tokenTunnel(agentToken)
	if err != nil {
		return nil, err
	}
	return u.JoinPath("api", "v1", "tunnels", tunnel, "nodes"), nil
}

// tokenTunnel reads the tunnel an agent token names, unverified: only to build a URL; the
// control plane checks the token.
func tokenTunnel(raw string) (string, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "", errors.New("the agent token is not a JWT")
	}
	body, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", errors.New("the agent token is not a JWT")
	}
	var c struct {
		Tunnel string `json:"tunnel"`
	}
	if json.Unmarshal(body, &c) != nil || c.Tunnel == "" || len(c.Tunnel) > 64 ||
		strings.ContainsFunc(c.Tunnel, func(r rune) bool {
			return !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
		}) {
		return "", errors.New("the agent token names no tunnel")
	}
	return c.Tunnel, nil
}

// discover asks the control plane which nodes to hold. A refusal of the token (401, 403) is
// permanent; anything else may pass.
func (a *agent) discover(ctx context.Context) ([]discovered, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.DialTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.discoverURL.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.cfg.Token)
	req.Header.Set("User-Agent", "tunnelplane-agent/"+a.cfg.Version)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: a.cfg.TLSConfig}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("discover nodes at %s: %w", a.discoverURL.Redacted(), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("discover nodes: %w", err)
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		var p struct {
			Detail string `json:"detail"`
		}
		_ = json.Unmarshal(body, &p)
		return nil, permanent(fmt.Sprintf("the control plane refused the agent token for discovery (%d): %.200s", resp.StatusCode, p.Detail), ErrAuthFailed)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("discover nodes: the control plane answered %s", resp.Status)
	}
	var d struct {
		Items []discovered `json:"items"`
	}
	if err := json.Unmarshal(body, &d); err != nil {
		return nil, fmt.Errorf("discover nodes: %w", err)
	}
	var out []discovered
	for _, n := range d.Items {
		if _, err := nodeURL(n.AgentURL); err != nil || !strings.HasPrefix(n.Fingerprint, "SHA256:") || len(out) == maxNodes {
			continue // not a node this agent can hold
		}
		out = append(out, n)
	}
	return out, nil
}

// discoverLoop asks again every DiscoverInterval and merges the answer into the pool.
func (p *pool) discoverLoop(ctx context.Context) {
	t := time.NewTicker(p.a.cfg.DiscoverInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		list, err := p.a.discover(ctx)
		if err != nil {
			if errors.Is(err, ErrPermanent) {
				p.stop(err)
				return
			}
			p.a.log.Warn("node discovery failed; keeping the nodes known", "error", err)
			continue
		}
		p.merge(list)
	}
}

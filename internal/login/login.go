// Package login is the client side of `tunnelplane login`: it asks a control plane which OpenID
// Connect provider it trusts, runs the OAuth 2.0 Device Authorization Grant (RFC 8628) there
// (golang.org/x/oauth2's DeviceAuth and DeviceAccessToken: interval, slow_down,
// authorization_pending, expired_token, access_denied), exchanges the ID token for a tunnelplane
// user token, and keeps that token in the user's config directory for later commands.
//
// It never prints or logs a token. It must not verify ID tokens itself: the control plane does.
package login

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
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/tunnelplane/tunnelplane/api"
)

// Sentinel errors; match with errors.Is.
var (
	ErrNotConfigured = errors.New("this control plane has no identity provider for interactive login (start it with --oidc-issuer and --oidc-client-id)")
	ErrNoDeviceFlow  = errors.New("the identity provider does not offer the device authorization grant (no device_authorization_endpoint)")
	ErrDenied        = errors.New("the login was denied at the identity provider")
	ErrExpired       = errors.New("the code expired before the login was approved; run login again")
	ErrRefused       = errors.New("the control plane refused the login")
)

// DefaultScopes are asked of the provider: the ID token, a name, and the groups claim.
var DefaultScopes = []string{oidc.ScopeOpenID, "profile", "email", "groups"}

// maxWait bounds a login whose provider gives no expiry for its code.
const maxWait = 15 * time.Minute

// maxBody bounds what is read of an answer.
const maxBody = 1 << 20

// Prompt is what the user must do: open URI (or Complete, which carries the code) and enter Code.
type Prompt struct {
	URI, Complete, Code string
}

// Config is one login.
type Config struct {
	// APIURL is the control plane's admin API (http(s)://host:port).
	APIURL string
	// Scopes asked of the provider (default DefaultScopes).
	Scopes []string
	// HTTP is used for the control plane and the provider (default: 30s timeout).
	HTTP *http.Client
	// Show tells the user what to do; it is called once, before the wait.
	Show func(Prompt)
}

// Run logs in: settings, device flow, exchange. The result holds the user token.
func Run(ctx context.Context, cfg Config) (api.OIDCLogin, error) {
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 30 * time.Second}
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = DefaultScopes
	}
	base, err := baseURL(cfg.APIURL)
	if err != nil {
		return api.OIDCLogin{}, err
	}
	var s api.OIDCSettings
	if err := callAPI(ctx, cfg.HTTP, http.MethodGet, base+"/api/v1/auth/oidc", nil, &s); err != nil {
		return api.OIDCLogin{}, err
	}
	idToken, err := deviceFlow(ctx, cfg, s)
	if err != nil {
		return api.OIDCLogin{}, err
	}
	var out api.OIDCLogin
	if err := callAPI(ctx, cfg.HTTP, http.MethodPost, base+"/api/v1/auth/oidc/token", api.OIDCLoginInput{IDToken: idToken}, &out); err != nil {
		return api.OIDCLogin{}, err
	}
	if out.Token == "" {
		return api.OIDCLogin{}, fmt.Errorf("%w: the answer holds no token", ErrRefused)
	}
	return out, nil
}

func baseURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("control plane URL %q: want http(s)://host:port", raw)
	}
	return strings.TrimSuffix(raw, "/"), nil
}

// deviceFlow runs RFC 8628 at the provider and returns the ID token.
func deviceFlow(ctx context.Context, cfg Config, s api.OIDCSettings) (string, error) {
	ctx = context.WithValue(oidc.ClientContext(ctx, cfg.HTTP), oauth2.HTTPClient, cfg.HTTP)
	p, err := oidc.NewProvider(ctx, s.Issuer)
	if err != nil {
		return "", fmt.Errorf("identity provider %s: %w", s.Issuer, err)
	}
	ep := p.Endpoint()
	if ep.DeviceAuthURL == "" {
		return "", ErrNoDeviceFlow
	}
	ep.AuthStyle = oauth2.AuthStyleInParams // a public client: its id in the form, no secret
	oc := &oauth2.Config{ClientID: s.ClientID, Endpoint: ep, Scopes: cfg.Scopes}
	da, err := oc.DeviceAuth(ctx)
	if err != nil {
		return "", fmt.Errorf("device authorization at %s: %w", s.Issuer, describe(err))
	}
	if da.VerificationURI == "" || da.UserCode == "" || da.DeviceCode == "" {
		return "", fmt.Errorf("device authorization at %s: the answer lacks the verification URI or a code", s.Issuer)
	}
	if cfg.Show != nil {
		cfg.Show(Prompt{URI: da.VerificationURI, Complete: da.VerificationURIComplete, Code: da.UserCode})
	}
	wait, cancel := context.WithTimeout(ctx, maxWait)
	defer cancel()
	tok, err := oc.DeviceAccessToken(wait, da)
	if err != nil {
		var re *oauth2.RetrieveError
		switch {
		case errors.As(err, &re) && re.ErrorCode == "access_denied":
			return "", ErrDenied
		case errors.As(err, &re) && re.ErrorCode == "expired_token",
			errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			return "", ErrExpired
		}
		return "", fmt.Errorf("waiting for the login at %s: %w", s.Issuer, describe(err))
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return "", fmt.Errorf("the identity provider gave no ID token (is %q among the scopes?)", oidc.ScopeOpenID)
	}
	return raw, nil
}

// describe keeps an OAuth error's code and description and drops the response body (which
// could carry anything).
func describe(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if re.ErrorCode != "" {
			return fmt.Errorf("%s: %s", re.ErrorCode, re.ErrorDescription)
		}
		if re.Response != nil {
			return fmt.Errorf("HTTP %d", re.Response.StatusCode)
		}
	}
	return err
}

// callAPI sends one request to the control plane and decodes a 2xx answer into out; a problem
// becomes an error with its detail (the control plane's words, which never quote a token).
func callAPI(ctx context.Context, hc *http.Client, method, u string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, maxBody))
	if err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	if res.StatusCode >= 200 && res.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("control plane: the answer is not the expected JSON: %w", err)
		}
		return nil
	}
	var p api.Problem
	_ = json.Unmarshal(raw, &p)
	switch {
	case res.StatusCode == http.StatusNotFound && strings.Contains(p.Detail, "--oidc-issuer"):
		return ErrNotConfigured
	case res.StatusCode == http.StatusUnauthorized:
		return fmt.Errorf("%w: %s", ErrRefused, p.Detail)
	case p.Detail != "":
		return fmt.Errorf("control plane: %d %s: %s", res.StatusCode, p.Title, p.Detail)
	}
	return fmt.Errorf("control plane: %s %s: HTTP %d", method, req.URL.Path, res.StatusCode)
}

package nodeapp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
)

// RESTControlPlane is the control plane as a separate node reaches it: its admin API. The log's
// description is public; enrolling takes a node enrollment token (or a superadmin's token).
type RESTControlPlane struct {
	base, token, enrollmentToken string
	client                       *http.Client
}

// NewRESTControlPlane talks to the admin API at baseURL (http(s)://host:port). token, when not
// empty, is a superadmin's token: it is sent on every request (the way before enrollment tokens).
func NewRESTControlPlane(baseURL, token string) *RESTControlPlane {
	return &RESTControlPlane{base: strings.TrimRight(baseURL, "/"), token: token, client: &http.Client{Timeout: 30 * time.Second}}
}

// WithEnrollmentToken makes the node enroll with a node enrollment token ("tpe_…"), which is sent
// on the enrollment and nowhere else.
func (c *RESTControlPlane) WithEnrollmentToken(tok string) *RESTControlPlane {
	c.enrollmentToken = tok
	return c
}

// Log is GET /api/v1/log: the log's origin, genesis hash and size.
func (c *RESTControlPlane) Log(ctx context.Context) (LogInfo, error) {
	var info LogInfo
	if _, err := c.do(ctx, c.token, http.MethodGet, "/api/v1/log", nil, &info); err != nil {
		return LogInfo{}, err
	}
	if info.Origin == "" || len(info.GenesisHash) == 0 {
		return LogInfo{}, errors.New("the control plane did not say its log's origin and genesis hash")
	}
	return info, nil
}

// Enroll is POST /api/v1/nodes; 409 means enrolled before (domain.ErrConflict).
func (c *RESTControlPlane) Enroll(ctx context.Context, e Enrollment) error {
	tok := c.token
	if c.enrollmentToken != "" {
		tok = c.enrollmentToken
	}
	status, err := c.do(ctx, tok, http.MethodPost, "/api/v1/nodes", e, nil)
	if status == http.StatusConflict {
		return fmt.Errorf("%w: %w", domain.ErrConflict, err)
	}
	return err
}

func (c *RESTControlPlane) do(ctx context.Context, token, method, path string, body any, out any) (int, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		var p struct {
			Title  string `json:"title"`
			Detail string `json:"detail"`
		}
		_ = json.Unmarshal(raw, &p)
		return resp.StatusCode, fmt.Errorf("%s %s: %s: %s %s", method, path, resp.Status, p.Title, p.Detail)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

package siem

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ErrRefused: the receiver refused a batch for good (a 4xx other than 408 and 429: a bad token,
// a malformed event). The forwarder still never skips it: it retries, and an operator acts.
var ErrRefused = errors.New("siem: the receiver refused the batch")

// HTTPS profiles: how a batch is framed and authorized.
const (
	// ProfileHEC posts to a Splunk HTTP Event Collector (/services/collector/event,
	// "Authorization: Splunk <token>"): the messages (HECFormat) one after another.
	ProfileHEC = "hec"
	// ProfileJSON posts the messages as one JSON array ("Authorization: Bearer <token>" when a
	// token is set).
	ProfileJSON = "json"
)

// HTTPSConfig says where and how to post batches.
type HTTPSConfig struct {
	URL     string
	Profile string // ProfileHEC or ProfileJSON
	// Token authorizes the posts (a secret: it is never logged or put in errors).
	Token string
	// TLS verifies the receiver and may present a client certificate (nil: the system roots).
	TLS *tls.Config
	// Timeout bounds one post (default 30s).
	Timeout time.Duration
}

// Validate reports every problem at once.
func (c HTTPSConfig) Validate() error {
	var errs []error
	if u, err := url.Parse(c.URL); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		errs = append(errs, errors.New("siem https: the URL must be https://host[:port]/path, without credentials"))
	}
	if c.Profile != ProfileHEC && c.Profile != ProfileJSON {
		errs = append(errs, fmt.Errorf("siem https: profile %q: want %q or %q", c.Profile, ProfileHEC, ProfileJSON))
	}
	if c.Profile == ProfileHEC && c.Token == "" {
		errs = append(errs, errors.New("siem https: the hec profile needs the collector's token"))
	}
	if strings.ContainsAny(c.Token, "\r\n") {
		errs = append(errs, errors.New("siem https: the token must be one line"))
	}
	if c.TLS != nil && c.TLS.InsecureSkipVerify {
		errs = append(errs, errors.New("siem https: the receiver's certificate must be verified"))
	}
	if c.Timeout < 0 {
		errs = append(errs, errors.New("siem https: the timeout must not be negative"))
	}
	return errors.Join(errs...)
}

// HTTPS delivers batches by POST; a 2xx answer is the acknowledgement.
type HTTPS struct {
	cfg    HTTPSConfig
	client *http.Client
}

// NewHTTPS checks cfg and fills in the defaults.
func NewHTTPS(cfg HTTPSConfig) (*HTTPS, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg.TLS
	return &HTTPS{cfg: cfg, client: &http.Client{Transport: tr, Timeout: cfg.Timeout,
		// A redirect would resend the token elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}, nil
}

// Deliver posts msgs as one request.
func (h *HTTPS) Deliver(ctx context.Context, msgs [][]byte) error {
	var body []byte
	switch h.cfg.Profile {
	case ProfileHEC:
		body = bytes.Join(msgs, []byte{'\n'})
	default:
		body = append(append([]byte{'['}, bytes.Join(msgs, []byte{','})...), ']')
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotAcknowledged, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if h.cfg.Token != "" {
		scheme := "Bearer "
		if h.cfg.Profile == ProfileHEC {
			scheme = "Splunk "
		}
		req.Header.Set("Authorization", scheme+h.cfg.Token)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: post to %s: %w", ErrNotAcknowledged, h.cfg.URL, err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	why := resp.Status
	var hec struct {
		Text string `json:"text"`
		Code *int   `json:"code"`
	}
	if json.Unmarshal(answer, &hec) == nil && hec.Text != "" {
		why += ": " + hec.Text
		if hec.Code != nil {
			why += fmt.Sprintf(" (code %d)", *hec.Code)
		}
	}
	if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests {
		return fmt.Errorf("%w: %s answered %s", ErrRefused, h.cfg.URL, why)
	}
	return fmt.Errorf("%w: %s answered %s", ErrNotAcknowledged, h.cfg.URL, why)
}

// HECFormat is the Format of a HEC sink: body (OCSF or raw, JSON) as a HEC event with the
// event's time, source "tunnelplane", and as indexed fields the event id, position, sequence
// and record hash.
func HECFormat(host, sourcetype string, body func(Entry) ([]byte, error)) func(Entry) ([]byte, error) {
	return func(e Entry) ([]byte, error) {
		b, err := body(e)
		if err != nil {
			return nil, err
		}
		if e.Record == nil {
			return nil, errors.New("siem: entry without a record")
		}
		return json.Marshal(struct {
			Time       float64           `json:"time"`
			Host       string            `json:"host,omitempty"`
			Source     string            `json:"source"`
			Sourcetype string            `json:"sourcetype"`
			Event      json.RawMessage   `json:"event"`
			Fields     map[string]string `json:"fields"`
		}{
			Time: float64(e.Record.RecordedAt.UnixMilli()) / 1000, Host: host, Source: "tunnelplane", Sourcetype: sourcetype,
			Event: b,
			Fields: map[string]string{"event_id": e.Record.EventID.String(), "position": fmt.Sprint(e.Record.Position),
				"seq": fmt.Sprint(e.Seq), "record_hash": fmt.Sprintf("%x", e.Record.Hash)},
		})
	}
}

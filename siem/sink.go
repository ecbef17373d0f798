package siem

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// SinkOptions are what every sink of a control plane shares.
type SinkOptions struct {
	// Hostname names the sender (syslog HOSTNAME, HEC host).
	Hostname string
	Product  Product
	// Secrets opens the sink's sealed or referenced secrets.
	Secrets *Secrets
	// Timeout bounds one delivery's connect and acknowledgement (0: the transports' defaults).
	Timeout time.Duration
	// Personal, when set, opens the personal data sealed in records before they are formatted
	// (the raw format sends the signed bytes, sealed).
	Personal PersonalOpener
}

// SinkParts are what a forwarder needs to deliver to a sink as the log configured it.
type SinkParts struct {
	Format func(Entry) ([]byte, error)
	// AppendFormat, when set, is Format appending to a buffer (ForwarderConfig.AppendFormat).
	AppendFormat func(dst []byte, e Entry) ([]byte, error)
	Filter       func(*eventstore.Record) bool
	Redact       *Redactor
	Transport    Transport
	// Unsigned: the format reads no signature (OCSF, CEF; the raw format sends it).
	Unsigned bool
}

// BuildSink turns a sink's spec into its parts: transport, TLS, format, filter, redaction. An
// org's sink (orgID set) forwards only that organization's events.
func BuildSink(orgID string, spec domain.SIEMSinkSpec, o SinkOptions) (SinkParts, error) {
	if o.Secrets == nil {
		return SinkParts{}, errors.New("siem: no secrets key to open the sink's secrets with")
	}
	var p SinkParts
	filter := SinkFilter{Types: spec.Types, OrgID: orgID, MinSeverity: spec.MinSeverity}
	if err := filter.Validate(); err != nil {
		return SinkParts{}, err
	}
	p.Filter = filter.Match
	if spec.RedactKey != "" {
		key, err := o.Secrets.Open("redact_key", spec.RedactKey)
		if err != nil {
			return SinkParts{}, err
		}
		if p.Redact, err = NewRedactor(key); err != nil {
			return SinkParts{}, err
		}
	}
	tlsConfig, err := sinkTLS(spec, o.Secrets)
	if err != nil {
		return SinkParts{}, err
	}
	var body func(Entry) ([]byte, error)
	switch spec.Format {
	case domain.SIEMFormatOCSF:
		body = func(e Entry) ([]byte, error) { return OCSF(e, o.Product) }
	case domain.SIEMFormatCEF:
		body = func(e Entry) ([]byte, error) {
			s, err := CEF(e, o.Product)
			return []byte(s), err
		}
	case domain.SIEMFormatRaw:
		body = Raw
	default:
		return SinkParts{}, fmt.Errorf("siem: format %q", spec.Format)
	}
	p.Unsigned = spec.Format != domain.SIEMFormatRaw
	switch spec.Transport {
	case domain.SIEMTransportSyslog:
		sc := SyslogConfig{Hostname: o.Hostname}
		if spec.Format == domain.SIEMFormatOCSF {
			p.Format, p.AppendFormat = SyslogOCSF(sc, o.Product), AppendSyslogOCSF(sc, o.Product)
		} else {
			p.Format = SyslogFormat(sc, body)
		}
		p.Transport, err = NewSyslogTLS(SyslogTLSConfig{Address: spec.Address, TLS: tlsConfig, DialTimeout: o.Timeout, AckTimeout: o.Timeout})
	case domain.SIEMTransportHTTPS:
		p.Format = body
		if spec.Profile == domain.SIEMProfileHEC {
			p.Format = HECFormat(o.Hostname, "tunnelplane:"+spec.Format, body)
		}
		var token []byte
		if spec.Token != "" {
			if token, err = o.Secrets.Open("token", spec.Token); err != nil {
				return SinkParts{}, err
			}
		}
		p.Transport, err = NewHTTPS(HTTPSConfig{URL: spec.URL, Profile: spec.Profile, Token: string(token), TLS: tlsConfig, Timeout: o.Timeout})
	default:
		return SinkParts{}, fmt.Errorf("siem: transport %q", spec.Transport)
	}
	if err != nil {
		return SinkParts{}, err
	}
	if format, personal := p.Format, o.Personal; personal != nil {
		p.Format = func(e Entry) ([]byte, error) {
			e.Personal = personal
			return format(e)
		}
		if app := p.AppendFormat; app != nil {
			p.AppendFormat = func(dst []byte, e Entry) ([]byte, error) {
				e.Personal = personal
				return app(dst, e)
			}
		}
	}
	return p, nil
}

// sinkTLS is the TLS a sink speaks: the receiver verified against its CA (or the system's), under
// its host name or ServerName, a client certificate when the sink has one.
func sinkTLS(spec domain.SIEMSinkSpec, secrets *Secrets) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: spec.ServerName}
	if c.ServerName == "" {
		host := spec.Address
		if spec.Transport == domain.SIEMTransportHTTPS {
			if u, err := url.Parse(spec.URL); err == nil {
				host = u.Host
			}
		}
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		c.ServerName = host
	}
	if spec.CACertPEM != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(spec.CACertPEM)) {
			return nil, errors.New("siem: ca_cert_pem holds no certificate")
		}
		c.RootCAs = pool
	}
	if spec.ClientCertPEM != "" {
		key, err := secrets.Open("client_key", spec.ClientKey)
		if err != nil {
			return nil, err
		}
		cert, err := tls.X509KeyPair([]byte(spec.ClientCertPEM), key)
		if err != nil {
			return nil, fmt.Errorf("siem: the client certificate and key do not make a pair: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/tunnelplane/tunnelplane/api"
)

// siemFlags are the flags that describe a sink (add, update). Secrets come from files, never
// from the command line (where ps shows them).
type siemFlags struct {
	transport, address, url, profile, format, serverName       string
	tokenFile, tokenRef, caFile, clientCertFile, clientKeyFile string
	clientKeyRef                                               string
	types                                                      []string
	minSeverity                                                int
	redact                                                     bool
}

func (f *siemFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.transport, "transport", "", "syslog (RFC 5424 over TLS) or https")
	fs.StringVar(&f.address, "address", "", "syslog: the receiver's host:port (TLS, like siem.example.com:6514)")
	fs.StringVar(&f.url, "url", "", "https: the endpoint, like https://splunk.example.com:8088/services/collector/event")
	fs.StringVar(&f.profile, "profile", "", "https: hec (Splunk HTTP Event Collector) or json (a JSON array per batch)")
	fs.StringVar(&f.format, "format", "", "ocsf, cef (syslog only) or raw (the signed record)")
	fs.StringVar(&f.serverName, "server-name", "", "TLS name expected of the receiver (default: its host)")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the HEC or bearer token; the control plane seals it before it is recorded (- reads stdin)")
	fs.StringVar(&f.tokenRef, "token-ref", "", "env:NAME or file:PATH the control plane reads the token from itself (platform sinks only)")
	fs.StringVar(&f.caFile, "ca-file", "", "PEM CA certificates the receiver is verified with (default: the system's)")
	fs.StringVar(&f.clientCertFile, "client-cert-file", "", "PEM client certificate to present")
	fs.StringVar(&f.clientKeyFile, "client-key-file", "", "its PEM private key; sealed by the control plane")
	fs.StringVar(&f.clientKeyRef, "client-key-ref", "", "env:NAME or file:PATH the control plane reads the client key from (platform sinks only)")
	fs.StringSliceVar(&f.types, "types", nil, "event types or prefixes ending in '.', comma-separated (default: all)")
	fs.IntVar(&f.minSeverity, "min-severity", 0, "lowest OCSF severity_id forwarded, 0 (all) to 6")
	fs.BoolVar(&f.redact, "redact-client-ips", false, "hash client addresses with a key of the sink's own")
}

// readSecret reads a secret file ("-": stdin), without its trailing newline.
func readSecret(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(io.LimitReader(os.Stdin, 64<<10))
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// input applies the flags given to in (all of them for add; the changed ones for update).
func (f *siemFlags) input(fs *pflag.FlagSet, in *api.SIEMSinkInput) error {
	set := func(flag string, dst *string, v string) {
		if fs.Changed(flag) {
			*dst = v
		}
	}
	set("transport", &in.Transport, f.transport)
	set("address", &in.Address, f.address)
	set("url", &in.URL, f.url)
	set("profile", &in.Profile, f.profile)
	set("format", &in.Format, f.format)
	set("server-name", &in.ServerName, f.serverName)
	set("token-ref", &in.TokenRef, f.tokenRef)
	set("client-key-ref", &in.ClientKeyRef, f.clientKeyRef)
	if fs.Changed("types") {
		in.Types = f.types
	}
	if fs.Changed("min-severity") {
		in.MinSeverity = f.minSeverity
	}
	if fs.Changed("redact-client-ips") {
		in.RedactClientIPs = f.redact
	}
	var err error
	for _, file := range []struct {
		flag string
		dst  *string
	}{{"token-file", &in.Token}, {"client-key-file", &in.ClientKey}, {"ca-file", &in.CACertPEM}, {"client-cert-file", &in.ClientCertPEM}} {
		if !fs.Changed(file.flag) {
			continue
		}
		path, _ := fs.GetString(file.flag)
		if *file.dst, err = readSecret(path); err != nil {
			return fmt.Errorf("--%s: %w", file.flag, err)
		}
	}
	return nil
}

func sinkState(s api.SIEMSinkStatus) string {
	switch {
	case s.Refused && s.StuckPosition != nil:
		return fmt.Sprintf("REFUSED at %d", *s.StuckPosition)
	case s.Refused:
		return "REFUSED"
	case s.LastError != "":
		return "retrying"
	}
	return "ok"
}

func sinkRows(k api.SIEMSink) [][]string {
	scope := "org " + k.OrgID
	if k.Platform {
		scope = "platform"
	}
	s := k.Status
	rows := [][]string{{"name", k.Name}, {"id", k.ID}, {"scope", scope}, {"transport", k.Transport}, {"receiver", k.Address + k.URL},
		{"profile", k.Profile}, {"format", k.Format}, {"token", k.Token}, {"client key", k.ClientKey}, {"types", strings.Join(k.Types, ",")},
		{"min severity", fmt.Sprint(k.MinSeverity)}, {"redact client ips", fmt.Sprint(k.RedactClientIPs)}, {"version", fmt.Sprint(k.Version)},
		{"configured", short(k.ConfiguredAt) + " by " + k.ConfiguredBy}, {"state", sinkState(s)}, {"next position", fmt.Sprint(s.NextPosition)},
		{"last sequence", fmt.Sprint(s.Seq)}, {"delivered", fmt.Sprint(s.Delivered)}, {"retries", fmt.Sprint(s.Retries)},
		{"lag", fmt.Sprintf("%d events, %.1fs", s.LagEvents, s.LagSeconds)}, {"last error", s.LastError}}
	if len(k.Skipped) > 0 {
		rows = append(rows, []string{"skipped", fmt.Sprint(k.Skipped)})
	}
	if k.RemovedAt != nil {
		rows = append(rows, []string{"removed", short(*k.RemovedAt)})
	}
	return rows
}

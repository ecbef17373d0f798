package wire

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// CheckNATSURLs checks a NATS server list as nats.Connect takes it (URLs separated by commas,
// empty ones ignored, "nats://" assumed where no scheme is given) and says what is wrong without the URL's
// password: url.Parse's own errors quote the whole URL, credentials included.
func CheckNATSURLs(urls string) error {
	parts := natsURLs(urls)
	if len(parts) == 0 {
		return errors.New("no NATS URL given")
	}
	var errs []error
	for i, p := range parts {
		u, err := parseNATSURL(p)
		var ue *url.Error
		switch {
		case errors.As(err, &ue):
			errs = append(errs, fmt.Errorf("NATS URL %d of %d does not parse (not shown: it may hold a password): %w", i+1, len(parts), ue.Err))
		case err != nil:
			errs = append(errs, fmt.Errorf("NATS URL %d of %d: %w", i+1, len(parts), err))
		case u.Host == "":
			errs = append(errs, fmt.Errorf("NATS URL %d of %d (%s) names no host", i+1, len(parts), u.Redacted()))
		}
	}
	return errors.Join(errs...)
}

// RedactNATSURLs is urls with every password replaced by "xxxxx", and a URL that does not
// parse replaced whole: what may be printed or logged.
func RedactNATSURLs(urls string) string {
	parts := natsURLs(urls)
	for i, p := range parts {
		if u, err := parseNATSURL(p); err == nil {
			parts[i] = u.Redacted()
		} else {
			parts[i] = "(a URL that does not parse)"
		}
	}
	return strings.Join(parts, ",")
}

// natsURLs splits a server list as nats.Connect does: by commas, trimmed, empty ones left out.
func natsURLs(urls string) []string {
	var out []string
	for p := range strings.SplitSeq(urls, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func parseNATSURL(p string) (*url.URL, error) {
	if !strings.Contains(p, "://") {
		p = "nats://" + p
	}
	return url.Parse(p)
}

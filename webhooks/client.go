package webhooks

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
)

// ErrInternalAddress: the endpoint's host resolved to an address the operator did not allow.
var ErrInternalAddress = errors.New("webhooks: the endpoint resolves to a loopback, private or link-local address, refused (SSRF); an operator may allow it with --webhook-allow-private")

// NewClient is the HTTP client of deliveries: each try bounded by timeout, no redirects followed,
// no proxy from the environment, and, unless allowPrivate, no connection to an internal address
// (checked on the address dialled, after name resolution, so a name that resolves or later
// rebinds to one is refused as a literal address is).
func NewClient(timeout time.Duration, allowPrivate bool) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		dialer.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: %s", ErrInternalAddress, address)
			}
			if domain.InternalAddr(ap.Addr()) {
				return fmt.Errorf("%w: %s", ErrInternalAddress, ap.Addr())
			}
			return nil
		}
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

package wire

import (
	"strings"
	"testing"
)

// A NATS URL that does not parse is refused without its password (url.Parse's own error quotes
// it whole); good lists pass as nats.Connect takes them; what may be printed has no password.
func TestNATSURLsNeverShowTheirPassword(t *testing.T) {
	t.Parallel()
	for _, good := range []string{"nats://127.0.0.1:4222", "127.0.0.1:4222", "tls://node-a:s3cret@nats:4222", "nats://a:4222, nats://b:4222", "nats://a:4222,,"} {
		if err := CheckNATSURLs(good); err != nil {
			t.Errorf("%q: %v", good, err)
		}
	}
	for _, bad := range []string{"nats://node-a:s3cret@nats:42x2", "nats://node-a:s3cret@nats:4222,nats://u:s3cret@h:9z", "nats://node-a:s3cret\x7f@nats:4222", " , ", "nats://node-a:s3cret@/x"} {
		err := CheckNATSURLs(bad)
		if err == nil {
			t.Errorf("%q accepted", bad)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%q: the error shows the password: %v", bad, err)
		}
		if r := RedactNATSURLs(bad); strings.Contains(r, "s3cret") {
			t.Errorf("%q redacted is %q", bad, r)
		}
	}
	if r := RedactNATSURLs("tls://node-a:s3cret@nats:4222,nats://b:4222"); r != "tls://node-a:xxxxx@nats:4222,nats://b:4222" {
		t.Errorf("redacted: %q", r)
	}
	// Connect checks before it dials: its error is as clean.
	if _, err := Connect("nats://node-a:s3cret@nats:42x2", ConnectConfig{}); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("connect: %v", err)
	}
}

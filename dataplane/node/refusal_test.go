package node_test

import (
	"strings"
	"testing"

	"github.com/tunnelplane/tunnelplane/dataplane/node"
)

// The agent reads the node's login banner; it comes from the network, so the parser is fuzzed,
// seeded with the banners nodes send, old and new.
func FuzzParseRefusalBanner(f *testing.F) {
	for _, seed := range []string{
		node.RefusalBanner(node.ReasonTokenRevoked, "agent token revoked (token 0193f2a4)"),
		node.RefusalBanner(node.ReasonTokenUnknown, "agent token rejected: tunnel x does not exist"),
		node.RefusalBanner("", "no code"),
		"tunnelplane: agent token rejected: unauthenticated: token expired 1m ago\n", // an older node
		"tunnelplane: x [reason=]\n", "[reason=a b]", "",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, banner string) {
		code, msg := node.ParseRefusalBanner(banner)
		if strings.ContainsAny(code, " []") {
			t.Fatalf("code %q from %q", code, banner)
		}
		if code != "" && !strings.Contains(banner, "[reason="+code+"]") {
			t.Fatalf("code %q is not in %q", code, banner)
		}
		if len(msg) > len(banner) {
			t.Fatalf("message %q longer than the banner %q", msg, banner)
		}
	})
}

func TestRefusalBannerRoundTrips(t *testing.T) {
	for _, tc := range []struct{ code, msg, wantMsg string }{
		{node.ReasonTunnelDeleted, "tunnel deleted (tunnel t-1)", "tunnel deleted (tunnel t-1)"},
		{"", "agent token rejected: it names no tunnel", "agent token rejected: it names no tunnel"},
		{node.ReasonTokenInvalid, "two\nlines", "two lines"}, // a banner is one line
	} {
		code, msg := node.ParseRefusalBanner(node.RefusalBanner(tc.code, tc.msg))
		if code != tc.code || msg != tc.wantMsg {
			t.Errorf("(%q, %q) came back as (%q, %q)", tc.code, tc.msg, code, msg)
		}
	}
	if !node.PermanentReason(node.ReasonTokenRevoked) || node.PermanentReason(node.ReasonTokenUnknown) || node.PermanentReason("from-the-future") {
		t.Error("PermanentReason")
	}
}

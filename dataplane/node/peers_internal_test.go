package node

import (
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/internal/tracing"
)

// Peer frames as a forwarding node sends them: seeds of the fuzz tests below.
func realPeerCall() []byte {
	return ssh.Marshal(PeerCall{TunnelID: "0190a3b2-7c1d-7e8f-9a0b-1c2d3e4f5a6b", OrgID: "0190a3b2-7c1d-7e8f-9a0b-1c2d3e4f5a6c",
		OriginAddr: "203.0.113.7", OriginPort: 51234, WaitMillis: 4800, Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
}

func realPeerInfo() []byte {
	return ssh.Marshal(PeerInfo{HostHeader: "localhost:11434", Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b8-01"})
}

// A channel open's payload from a peer is decoded whole and bounded, or refused: whatever the
// bytes, an accepted call names printable bounded ids and address.
func FuzzParsePeerCall(f *testing.F) {
	f.Add(realPeerCall())
	f.Add(ssh.Marshal(PeerCall{TunnelID: "t", OrgID: "o"}))
	f.Add(ssh.Marshal(PeerCall{TunnelID: strings.Repeat("t", 65), OrgID: "o"}))
	f.Add(ssh.Marshal(PeerCall{TunnelID: "t\r\nx", OrgID: "o"}))
	f.Add(realPeerCall()[:20]) // a frame cut short
	f.Fuzz(func(t *testing.T, b []byte) {
		pc, ok := parsePeerCall(b)
		if !ok {
			return
		}
		if !peerIDOK(pc.TunnelID) || !peerIDOK(pc.OrgID) || len(pc.OriginAddr) > peerMaxOrigin || !isVisibleASCII(pc.OriginAddr) || len(pc.Traceparent) > 128 {
			t.Fatalf("accepted %+v", pc)
		}
	})
}

// A peer's info is decoded with its Host header checked and only a strict traceparent kept: both
// go into the request the upstream reads.
func FuzzParsePeerInfo(f *testing.F) {
	f.Add(realPeerInfo())
	f.Add(ssh.Marshal(PeerInfo{HostHeader: "a\r\nX-Injected: 1"}))
	f.Add(ssh.Marshal(PeerInfo{Traceparent: "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"}))
	f.Add(realPeerInfo()[:9])
	f.Fuzz(func(t *testing.T, b []byte) {
		info, ok := parsePeerInfo(b)
		if !ok {
			return
		}
		if len(info.HostHeader) > 255 || !isHostValue([]byte(info.HostHeader)) {
			t.Fatalf("accepted Host %q", info.HostHeader)
		}
		if info.Traceparent != "" {
			if _, ok := tracing.ParseTraceparent([]byte(info.Traceparent)); !ok {
				t.Fatalf("kept traceparent %q", info.Traceparent)
			}
		}
	})
}

func TestPeerFramesAsSent(t *testing.T) {
	if pc, ok := parsePeerCall(realPeerCall()); !ok || pc.OriginPort != 51234 || pc.WaitMillis != 4800 {
		t.Fatalf("a forwarding node's call: %+v %v", pc, ok)
	}
	if info, ok := parsePeerInfo(realPeerInfo()); !ok || info.HostHeader != "localhost:11434" || info.Traceparent == "" {
		t.Fatalf("a receiving node's info: %+v %v", info, ok)
	}
	if _, ok := parsePeerInfo(ssh.Marshal(PeerInfo{HostHeader: "a\r\nX-Injected: 1"})); ok {
		t.Fatal("a Host header with a line break was accepted")
	}
	if info, _ := parsePeerInfo(ssh.Marshal(PeerInfo{Traceparent: "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"})); info.Traceparent != "" {
		t.Fatal("an uppercase traceparent was kept")
	}
}

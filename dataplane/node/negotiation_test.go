package node_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/compliance/pii/sealbox"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/dataplane/wsconn"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// A stock x/crypto client that offers only the fallback algorithms still gets its tunnel, and
// the session (and its AgentConnected fact) names what was negotiated.
func TestFallbackAlgorithmsAreNegotiatedAndReported(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	d := websocket.Dialer{Subprotocols: []string{node.ProtocolV1}, WriteBufferPool: wsconn.WriteBufferPool}
	ws, _, err := d.Dial(e.agentURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	conn := wsconn.New(ws, wsconn.Options{Client: true})
	defer conn.Close()
	sc, chans, reqs, err := ssh.NewClientConn(conn, "node", &ssh.ClientConfig{
		User:            node.AgentUser,
		Auth:            []ssh.AuthMethod{ssh.Password(e.agentToken("tun-llm", "stock", time.Now().Add(time.Hour)))},
		HostKeyCallback: ssh.FixedHostKey(e.hostKey.PublicKey()),
		Config:          ssh.Config{KeyExchanges: []string{ssh.KeyExchangeCurve25519}, Ciphers: []string{ssh.CipherChaCha20Poly1305}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	go func() {
		for nc := range chans {
			nc.Reject(ssh.Prohibited, "test")
		}
	}()
	if ok, _, err := sc.SendRequest(node.RequestForward, true, ssh.Marshal(node.ForwardRequest{})); err != nil || !ok {
		t.Fatalf("forward: %v %v", ok, err)
	}
	s := e.waitHeld("tun-llm")
	if s.KeyExchange != ssh.KeyExchangeCurve25519 || s.Cipher != ssh.CipherChaCha20Poly1305 || s.Protocol != node.ProtocolV1 {
		t.Fatalf("session %+v", s)
	}
	connected, _, _ := e.sink.snapshot()
	if len(connected) != 1 || connected[0].KeyExchange != ssh.KeyExchangeCurve25519 || connected[0].Cipher != ssh.CipherChaCha20Poly1305 ||
		connected[0].HostKeyAlgo != ssh.KeyAlgoED25519 {
		t.Fatalf("fact %+v", connected)
	}
	// The address is sealed to the token issuer's key, and opens with its private half.
	sealed, ok := sealbox.Parse(connected[0].RemoteAddr)
	if !ok || sealed.Subject != "user-alice" || sealed.Generation != 3 || strings.Contains(connected[0].RemoteAddr, "127.0.0.1") {
		t.Fatalf("remote_addr %q is not sealed to the issuer's key", connected[0].RemoteAddr)
	}
	if addr, err := sealbox.Open(e.sealPriv, sealed, "remote_addr"); err != nil || !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("opened remote_addr = %q, %v", addr, err)
	}

	// Algorithms outside the node's set are refused.
	ws2, _, err := d.Dial(e.agentURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	conn2 := wsconn.New(ws2, wsconn.Options{Client: true})
	defer conn2.Close()
	_, _, _, err = ssh.NewClientConn(conn2, "node", &ssh.ClientConfig{
		User: node.AgentUser, HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Config: ssh.Config{Ciphers: []string{ssh.CipherAES128CTR}},
	})
	if err == nil || !strings.Contains(err.Error(), "no common algorithm") {
		t.Fatalf("aes128-ctr: %v", err)
	}
}

// A token issued without a sealing key (before keys existed) gets its agent's address left out of
// agent.connected: the log never holds it in plaintext.
func TestAgentAddressLeftOutWithoutSealingKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.auth.seal = node.SealKey{}
	e.startAgent("tun-llm", nil)
	e.waitHeld("tun-llm")
	var connected []domain.AgentConnected
	poll.Until(t, 10*time.Second, "agent.connected", func() bool {
		connected, _, _ = e.sink.snapshot()
		return len(connected) == 1
	})
	if connected[0].RemoteAddr != "" || connected[0].TokenID == "" {
		t.Fatalf("agent.connected of a token without a sealing key: %+v", connected[0])
	}
}

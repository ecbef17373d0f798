package node_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// enrolled plays the log's key history: the event keys in force per node.
type enrolled struct {
	mu sync.Mutex
	m  map[string][]ed25519.PublicKey
}

func (e *enrolled) NodeKeys(id string) []ed25519.PublicKey {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.m[id]
}

func (e *enrolled) set(id string, k ed25519.PublicKey) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if k == nil {
		delete(e.m, id)
		return
	}
	e.m[id] = []ed25519.PublicKey{k}
}

// peerEnv is a node that forwards: its id and enrolled key.
func peerEnv(t *testing.T, log *enrolled, enroll bool, mod func(*node.Config)) (*env, string, ed25519.PublicKey) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.Must(uuid.NewV7()).String()
	if enroll {
		log.set(id, pub)
	}
	e := newEnv(t, withNodeConfig(func(c *node.Config) {
		c.NodeID, c.Peers, c.PeerKey = id, log, signer
		if mod != nil {
			mod(c)
		}
	}))
	return e, id, pub
}

func (e *env) peerURL() string { return "ws://" + e.addr + "/v1/peer" }

// sumUpstream answers a POST with the SHA-256 of its body, anything else with "hello".
func sumUpstream(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			h := sha256.New()
			if _, err := io.Copy(h, r.Body); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			io.WriteString(w, hex.EncodeToString(h.Sum(nil)))
			return
		}
		io.WriteString(w, "hello "+r.Host)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestACallEnteringAtANodeWithoutTheAgentIsForwarded(t *testing.T) {
	log := &enrolled{m: map[string][]ed25519.PublicKey{}}
	up := sumUpstream(t)
	a, _, _ := peerEnv(t, log, true, nil)
	b, bID, _ := peerEnv(t, log, true, nil)
	b.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = up })
	b.waitHeld("tun-llm")

	a.nodeNow().PutRoute("tun-llm", bID, b.peerURL())
	for i := range 20 {
		status, _, body := a.do(a.request("GET", "/t/llm/x", nil, a.alice))
		if status != 200 || !strings.HasPrefix(string(body), "hello ") {
			t.Fatalf("call %d through the node without the agent: %d %s", i, status, body)
		}
	}
	payload := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	sum := sha256.Sum256([]byte(payload))
	status, _, body := a.do(a.request("POST", "/t/llm/sum", strings.NewReader(payload), a.alice))
	if status != 200 || string(body) != hex.EncodeToString(sum[:]) {
		t.Fatalf("POST through the hop: %d %s", status, body)
	}
}

func TestARouteNamingANodeNotEnrolledAttractsNothing(t *testing.T) {
	log := &enrolled{m: map[string][]ed25519.PublicKey{}}
	up := sumUpstream(t)
	a, _, _ := peerEnv(t, log, true, func(c *node.Config) { c.FailoverWait = 300 * time.Millisecond })
	b, bID, bKey := peerEnv(t, log, true, nil)
	b.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = up })
	b.waitHeld("tun-llm")

	log.set(bID, nil) // removed: its key is no longer in force
	a.nodeNow().PutRoute("tun-llm", bID, b.peerURL())
	status, h, body := a.do(a.request("GET", "/t/llm/x", nil, a.alice))
	mustProblem(t, status, h, body, 503)

	// An entry naming an enrolled node at another node's address reaches nothing either: the
	// host key there is not the named node's.
	_, cID, _ := peerEnv(t, log, true, nil)
	a.nodeNow().DeleteRoute("tun-llm", bID)
	a.nodeNow().PutRoute("tun-llm", cID, b.peerURL())
	status, h, body = a.do(a.request("GET", "/t/llm/x", nil, a.alice))
	mustProblem(t, status, h, body, 503)

	// Enrolled again, the route serves.
	log.set(bID, bKey)
	a.nodeNow().PutRoute("tun-llm", bID, b.peerURL())
	poll.Until(t, 5*time.Second, "served through b", func() bool {
		status, _, _ := a.do(a.request("GET", "/t/llm/x", nil, a.alice))
		return status == 200
	})
}

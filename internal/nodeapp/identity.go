package nodeapp

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

// Identity is what a node keeps in <data-dir>/node: its id and two keys, one purpose each — the
// SSH host key agents pin, and the event key that signs its facts.
type Identity struct {
	ID       string
	HostKey  *ledger.SigningKey
	EventKey *ledger.SigningKey
	Signer   ssh.Signer
}

// Fingerprint is the host key fingerprint agents pin.
func (n *Identity) Fingerprint() string { return ssh.FingerprintSHA256(n.Signer.PublicKey()) }

// LoadIdentity reads the node's identity from <dataDir>/node, creating what is missing (0600).
// want, if not empty, is the id the node must have: written on the first start (a NATS credential
// made for that id before the node ever ran), refused when the data dir holds another.
func LoadIdentity(dataDir, want string) (*Identity, error) {
	if want != "" && !domain.ValidID(want) {
		return nil, fmt.Errorf("%w: node id %q: want a UUID", ErrInvalidConfig, want)
	}
	dir := filepath.Join(dataDir, "node")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("node identity: %w", err)
	}
	idPath := filepath.Join(dir, "id")
	raw, err := os.ReadFile(idPath)
	if errors.Is(err, fs.ErrNotExist) {
		raw = []byte(want)
		if want == "" {
			raw = []byte(uuid.Must(uuid.NewV7()).String())
		}
		if err := os.WriteFile(idPath, raw, 0o600); err != nil {
			return nil, fmt.Errorf("node identity: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("node identity: %w", err)
	}
	id := strings.TrimSpace(string(raw))
	if !domain.ValidID(id) {
		return nil, fmt.Errorf("node identity: %s holds %q, not a UUID", idPath, id)
	}
	if want != "" && id != want {
		return nil, fmt.Errorf("%w: node id %s was asked for, but %s holds %s: this data dir belongs to another node", ErrInvalidConfig, want, idPath, id)
	}
	host, _, err := ledger.LoadOrCreateKeyFile(filepath.Join(dir, "host_key.pem"))
	if err != nil {
		return nil, fmt.Errorf("node host key: %w", err)
	}
	ev, _, err := ledger.LoadOrCreateKeyFile(filepath.Join(dir, "event_key.pem"))
	if err != nil {
		return nil, fmt.Errorf("node event key: %w", err)
	}
	signer, err := ssh.NewSignerFromSigner(host.CryptoSigner())
	if err != nil {
		return nil, fmt.Errorf("node host key: %w", err)
	}
	return &Identity{ID: id, HostKey: host, EventKey: ev, Signer: signer}, nil
}

// Enrollment is the registration of this node, given the log's origin (the proof of possession
// of the event key names it).
func (n *Identity) Enrollment(origin, name, agentURL, ingressURL string) Enrollment {
	return Enrollment{
		NodeID: n.ID, Name: name,
		HostKey:            strings.TrimSpace(string(ssh.MarshalAuthorizedKey(n.Signer.PublicKey()))),
		HostKeyFingerprint: n.Fingerprint(),
		EventKey:           ledger.NewKeyAdded(origin, ledger.PurposeNode, n.ID, n.EventKey),
		AgentURL:           agentURL, IngressURL: ingressURL,
	}
}

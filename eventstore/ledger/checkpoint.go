package ledger

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// ErrCheckpoint reports a checkpoint note that does not parse or verify.
var ErrCheckpoint = errors.New("invalid checkpoint")

// Checkpoints are signed notes in the C2SP tlog-checkpoint format:
//
//	<origin>\n<size>\n<base64 RFC 6962 root>\n\n— <origin> <base64(keyhash ‖ signature)>\n
//
// so standard transparency-log tooling can read and verify them. The note key name is the origin.

// NoteVerifierKey is the C2SP signed-note verifier key ("<origin>+<key hash hex>+<base64 of
// 0x01 ‖ public key>") of a log key: given it, golang.org/x/mod/sumdb/note (note.NewVerifier,
// note.Open) and other C2SP tooling verify the log's checkpoints without any of our code.
func NoteVerifierKey(origin string, pub ed25519.PublicKey) (string, error) {
	vkey, err := note.NewEd25519VerifierKey(origin, pub)
	if err != nil {
		return "", fmt.Errorf("%w: verifier key: %w", ErrCheckpoint, err)
	}
	return vkey, nil
}

// noteKeyHash computes the note key hash for an Ed25519 key under name, as golang.org/x/mod's
// note package does, by building its verifier key string.
func noteKeyHash(name string, pub ed25519.PublicKey) (uint32, error) {
	vkey, err := note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		return 0, err
	}
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return 0, fmt.Errorf("unexpected verifier key %q", vkey)
	}
	h, err := strconv.ParseUint(parts[1], 16, 32)
	return uint32(h), err
}

type noteSigner struct {
	name string
	hash uint32
	key  *SigningKey
}

func (s *noteSigner) Name() string { return s.name }

func (s *noteSigner) KeyHash() uint32 { return s.hash }

func (s *noteSigner) Sign(msg []byte) ([]byte, error) { return s.key.Sign(msg), nil }

type noteVerifier struct {
	name string
	hash uint32
	key  *VerifyingKey
}

func (v *noteVerifier) Name() string { return v.name }

func (v *noteVerifier) KeyHash() uint32 { return v.hash }

func (v *noteVerifier) Verify(msg, sig []byte) bool { return v.key.Verify(msg, sig) }

func SignCheckpoint(key *SigningKey, origin string, size uint64, root []byte) (string, error) {
	hash, err := noteKeyHash(origin, key.Public())
	if err != nil {
		return "", fmt.Errorf("eventstore: checkpoint key: %w", err)
	}
	body := log.Checkpoint{Origin: origin, Size: size, Hash: root}.Marshal()
	signed, err := note.Sign(&note.Note{Text: string(body)}, &noteSigner{name: origin, hash: hash, key: key})
	if err != nil {
		return "", fmt.Errorf("eventstore: sign checkpoint: %w", err)
	}
	return string(signed), nil
}

// SignedCheckpoint is a parsed and verified checkpoint.
type SignedCheckpoint struct {
	Origin string
	Size   uint64
	Root   []byte
	Note   string
}

// OpenCheckpoint verifies a checkpoint note against the public key that must have signed it.
func OpenCheckpoint(text, origin string, pub ed25519.PublicKey) (SignedCheckpoint, error) {
	vk, err := newVerifyingKey(pub)
	if err != nil {
		return SignedCheckpoint{}, fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	return OpenCheckpointWith(text, origin, vk)
}

func OpenCheckpointWith(text, origin string, vk *VerifyingKey) (SignedCheckpoint, error) {
	hash, err := noteKeyHash(origin, vk.pub)
	if err != nil {
		return SignedCheckpoint{}, fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	n, err := note.Open([]byte(text), note.VerifierList(&noteVerifier{name: origin, hash: hash, key: vk}))
	if err != nil {
		return SignedCheckpoint{}, fmt.Errorf("%w: signature by %s: %w", ErrCheckpoint, vk.id, err)
	}
	var cp log.Checkpoint
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil {
		return SignedCheckpoint{}, fmt.Errorf("%w: body: %w", ErrCheckpoint, err)
	}
	if cp.Origin != origin {
		return SignedCheckpoint{}, fmt.Errorf("%w: origin %q, want %q", ErrCheckpoint, cp.Origin, origin)
	}
	return SignedCheckpoint{Origin: cp.Origin, Size: cp.Size, Root: cp.Hash, Note: text}, nil
}

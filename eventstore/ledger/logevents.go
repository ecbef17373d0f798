package ledger

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"math"
	"sort"
)

// The log's own events live in the reserved stream "$log". They carry every public key that may
// sign records or checkpoints, so anyone holding the log can verify it without other inputs.
const (
	LogStream = "$log"

	TypeGenesis    = "log.genesis"
	TypeKeyRotated = "log.key_rotated"
	TypeKeyAdded   = "log.key_added"
	TypeKeyRevoked = "log.key_revoked"

	AlgorithmEd25519 = "ed25519"
)

// KeyPurpose says what a key may sign. One purpose per key.
type KeyPurpose string

const (
	// PurposeLog keys sign the records the control plane appends and every checkpoint.
	PurposeLog KeyPurpose = "log"
	// PurposeNode keys sign the events a data-plane node produces.
	PurposeNode KeyPurpose = "node"
	// PurposeToken keys sign user and agent tokens; they never sign records.
	PurposeToken KeyPurpose = "token"
)

func (p KeyPurpose) Valid() bool { return p == PurposeLog || p == PurposeNode || p == PurposeToken }

// SignsRecords reports whether keys of this purpose may sign log records.
func (p KeyPurpose) SignsRecords() bool { return p == PurposeLog || p == PurposeNode }

// GenesisPayload is the payload of the first record of every log.
type GenesisPayload struct {
	LogID     string            `json:"log_id"`
	Origin    string            `json:"origin"`
	Algorithm string            `json:"algorithm"`
	KeyID     string            `json:"key_id"`
	PublicKey ed25519.PublicKey `json:"public_key"`
}

// KeyRotatedPayload replaces a key by a new one of the same purpose. Both the old and the new key
// sign RotationMessage, so neither side can be forged alone.
type KeyRotatedPayload struct {
	Purpose         KeyPurpose        `json:"purpose"`
	Owner           string            `json:"owner,omitempty"`
	OldKeyID        string            `json:"old_key_id"`
	NewKeyID        string            `json:"new_key_id"`
	Algorithm       string            `json:"algorithm"`
	PublicKey       ed25519.PublicKey `json:"public_key"`
	OldKeySignature []byte            `json:"old_key_signature"`
	NewKeySignature []byte            `json:"new_key_signature"`
}

// KeyAddedPayload registers an additional key (a node's event key, a token key). The record is
// signed by the log key; Proof is the new key's signature over AddMessage (proof of possession).
type KeyAddedPayload struct {
	Purpose   KeyPurpose        `json:"purpose"`
	Owner     string            `json:"owner,omitempty"`
	KeyID     string            `json:"key_id"`
	Algorithm string            `json:"algorithm"`
	PublicKey ed25519.PublicKey `json:"public_key"`
	Proof     []byte            `json:"proof"`
}

// KeyRevokedPayload ends a key's validity after this record's position.
type KeyRevokedPayload struct {
	KeyID  string `json:"key_id"`
	Reason string `json:"reason,omitempty"`
}

func logEventTypes() []EventType {
	return []EventType{
		{Name: TypeGenesis, SchemaVersion: 1},
		{Name: TypeKeyRotated, SchemaVersion: 1},
		{Name: TypeKeyAdded, SchemaVersion: 1},
		{Name: TypeKeyRevoked, SchemaVersion: 1},
	}
}

func keyMessage(tag, origin string, parts ...[]byte) []byte {
	msg := append([]byte(tag), 0)
	msg = appendString(msg, origin)
	for _, p := range parts {
		msg = appendBytes(msg, p)
	}
	return msg
}

// RotationMessage is what both keys of a rotation sign.
func RotationMessage(origin string, purpose KeyPurpose, oldKeyID, newKeyID string, newPub ed25519.PublicKey) []byte {
	return keyMessage("tunnelplane/key-rotation/v1", origin, []byte(purpose), []byte(oldKeyID), []byte(newKeyID), newPub)
}

// AddMessage is what an added key signs to prove possession.
func AddMessage(origin string, purpose KeyPurpose, owner, keyID string, pub ed25519.PublicKey) []byte {
	return keyMessage("tunnelplane/key-added/v1", origin, []byte(purpose), []byte(owner), []byte(keyID), pub)
}

// NewKeyRotation builds the payload replacing oldKey by newKey.
func NewKeyRotation(origin string, purpose KeyPurpose, owner string, oldKey, newKey *SigningKey) KeyRotatedPayload {
	msg := RotationMessage(origin, purpose, oldKey.ID(), newKey.ID(), newKey.Public())
	return KeyRotatedPayload{
		Purpose: purpose, Owner: owner, OldKeyID: oldKey.ID(), NewKeyID: newKey.ID(),
		Algorithm: AlgorithmEd25519, PublicKey: newKey.Public(),
		OldKeySignature: oldKey.Sign(msg), NewKeySignature: newKey.Sign(msg),
	}
}

// NewKeyAdded builds the payload registering key for purpose and owner.
func NewKeyAdded(origin string, purpose KeyPurpose, owner string, key *SigningKey) KeyAddedPayload {
	return KeyAddedPayload{
		Purpose: purpose, Owner: owner, KeyID: key.ID(), Algorithm: AlgorithmEd25519,
		PublicKey: key.Public(), Proof: key.Sign(AddMessage(origin, purpose, owner, key.ID(), key.Public())),
	}
}

// KeyInfo is one key in a log's key history.
type KeyInfo struct {
	KeyID       string     `json:"key_id"`
	Purpose     KeyPurpose `json:"purpose"`
	Owner       string     `json:"owner,omitempty"`
	Fingerprint string     `json:"fingerprint"`
	// ValidFrom is the first position the key may sign; ValidUntil the first it may not
	// (absent while the key is in force).
	ValidFrom  uint64  `json:"valid_from"`
	ValidUntil *uint64 `json:"valid_until,omitempty"`
	// PublicKey is the Ed25519 public key (base64 in JSON).
	PublicKey ed25519.PublicKey `json:"public_key"`
	// VerifierKey is a log key as a C2SP note verifier key (NoteVerifierKey): what standard
	// tooling (golang.org/x/mod/sumdb/note) opens the log's checkpoints with. Empty for the
	// other purposes, which never sign checkpoints.
	VerifierKey string `json:"verifier_key,omitempty"`
}

type RingKey struct {
	*VerifyingKey
	purpose KeyPurpose
	owner   string
	from    uint64
	until   uint64 // math.MaxUint64 while in force
}

// Purpose is what the key is for.
func (k *RingKey) Purpose() KeyPurpose { return k.purpose }

// Until is the first position the key no longer signs (math.MaxUint64 while in force).
func (k *RingKey) Until() uint64 { return k.until }

// KeyRing is the key history of a log as of some position. It is copied on write so that
// snapshots can be handed to concurrent verifiers.
type KeyRing struct {
	origin string
	logKey string // id of the log key in force
	keys   map[string]*RingKey
}

// Origin is the log's origin the genesis named ("" before the genesis).
func (r *KeyRing) Origin() string { return r.origin }

// LogKey is the log key in force (nil before the genesis).
func (r *KeyRing) LogKey() *RingKey { return r.keys[r.logKey] }

// LogKeyID is the id of the log key in force.
func (r *KeyRing) LogKeyID() string { return r.logKey }

// Key is the key id names (nil when the history has none).
func (r *KeyRing) Key(id string) *RingKey { return r.keys[id] }

// NewKeyRing is the key history of a log before its genesis.
func NewKeyRing() *KeyRing { return &KeyRing{keys: map[string]*RingKey{}} }

func (r *KeyRing) clone() *KeyRing {
	c := &KeyRing{origin: r.origin, logKey: r.logKey, keys: make(map[string]*RingKey, len(r.keys)+1)}
	for id, k := range r.keys {
		kc := *k
		c.keys[id] = &kc
	}
	return c
}

// signerAt returns the key that may sign a record at pos, or a failure kind and detail.
func (r *KeyRing) SignerAt(keyID string, pos uint64) (*RingKey, FailureKind, string) {
	k, ok := r.keys[keyID]
	if !ok || r.origin == "" {
		return nil, FailUnknownKey, fmt.Sprintf("key %q is not in the log's key history", keyID)
	}
	if !k.purpose.SignsRecords() {
		return nil, FailUnknownKey, fmt.Sprintf("key %q is a %s key and may not sign records", keyID, k.purpose)
	}
	if pos < k.from || pos >= k.until {
		return nil, FailKeyNotInForce, fmt.Sprintf("key %q is valid for positions [%d, %s), not %d", keyID, k.from, untilString(k.until), pos)
	}
	return k, "", ""
}

func untilString(u uint64) string {
	if u == math.MaxUint64 {
		return "∞"
	}
	return fmt.Sprint(u)
}

func (r *KeyRing) Infos() []KeyInfo {
	out := make([]KeyInfo, 0, len(r.keys))
	for _, k := range r.keys {
		ki := KeyInfo{KeyID: k.id, Purpose: k.purpose, Owner: k.owner, Fingerprint: Fingerprint(k.pub), ValidFrom: k.from, PublicKey: k.pub}
		if k.purpose == PurposeLog {
			ki.VerifierKey, _ = NoteVerifierKey(r.origin, k.pub) // the key and origin were checked when they entered the ring
		}
		if k.until != math.MaxUint64 {
			u := k.until
			ki.ValidUntil = &u
		}
		out = append(out, ki)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ValidFrom != out[j].ValidFrom {
			return out[i].ValidFrom < out[j].ValidFrom
		}
		return out[i].KeyID < out[j].KeyID
	})
	return out
}

// apply folds a "$log" record at pos into a copy of the ring. The record's own signature is
// checked elsewhere (with the ring as it was before the record).
func (r *KeyRing) Apply(pos uint64, typ string, payload []byte) (*KeyRing, error) {
	next := r.clone()
	switch typ {
	case TypeGenesis:
		var g GenesisPayload
		if err := json.Unmarshal(payload, &g); err != nil {
			return nil, fmt.Errorf("genesis payload: %w", err)
		}
		if pos != 0 || r.origin != "" {
			return nil, fmt.Errorf("genesis at position %d: only position 0 may be a genesis record", pos)
		}
		if g.Algorithm != AlgorithmEd25519 || g.Origin == "" {
			return nil, fmt.Errorf("genesis: algorithm %q, origin %q", g.Algorithm, g.Origin)
		}
		vk, err := newVerifyingKey(g.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("genesis: %w", err)
		}
		if vk.id != g.KeyID {
			return nil, fmt.Errorf("genesis: key id %q does not match its public key (%s)", g.KeyID, vk.id)
		}
		next.origin = g.Origin
		next.logKey = vk.id
		next.keys[vk.id] = &RingKey{VerifyingKey: vk, purpose: PurposeLog, from: 0, until: math.MaxUint64}
	case TypeKeyRotated:
		var p KeyRotatedPayload
		if err := json.Unmarshal(payload, &p); err != nil {
			return nil, fmt.Errorf("key rotation payload: %w", err)
		}
		old, ok := next.keys[p.OldKeyID]
		if !ok || old.until != math.MaxUint64 || old.purpose != p.Purpose || old.owner != p.Owner {
			return nil, fmt.Errorf("key rotation: old key %q is not a %s key in force", p.OldKeyID, p.Purpose)
		}
		vk, err := newVerifyingKey(p.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("key rotation: %w", err)
		}
		if vk.id != p.NewKeyID || p.Algorithm != AlgorithmEd25519 {
			return nil, fmt.Errorf("key rotation: new key id %q does not match its public key (%s)", p.NewKeyID, vk.id)
		}
		if _, dup := next.keys[vk.id]; dup {
			return nil, fmt.Errorf("key rotation: key %q was already in the history", vk.id)
		}
		msg := RotationMessage(r.origin, p.Purpose, p.OldKeyID, p.NewKeyID, p.PublicKey)
		if !old.Verify(msg, p.OldKeySignature) {
			return nil, fmt.Errorf("key rotation: the old key's cross-signature is invalid")
		}
		if !vk.Verify(msg, p.NewKeySignature) {
			return nil, fmt.Errorf("key rotation: the new key's cross-signature is invalid")
		}
		old.until = pos + 1
		next.keys[vk.id] = &RingKey{VerifyingKey: vk, purpose: p.Purpose, owner: p.Owner, from: pos + 1, until: math.MaxUint64}
		if p.Purpose == PurposeLog {
			next.logKey = vk.id
		}
	case TypeKeyAdded:
		var p KeyAddedPayload
		if err := json.Unmarshal(payload, &p); err != nil {
			return nil, fmt.Errorf("key added payload: %w", err)
		}
		if !p.Purpose.Valid() || p.Purpose == PurposeLog {
			return nil, fmt.Errorf("key added: purpose %q cannot be added (log keys change only by rotation)", p.Purpose)
		}
		vk, err := newVerifyingKey(p.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("key added: %w", err)
		}
		if vk.id != p.KeyID || p.Algorithm != AlgorithmEd25519 {
			return nil, fmt.Errorf("key added: key id %q does not match its public key (%s)", p.KeyID, vk.id)
		}
		if _, dup := next.keys[vk.id]; dup {
			return nil, fmt.Errorf("key added: key %q was already in the history", vk.id)
		}
		if !vk.Verify(AddMessage(r.origin, p.Purpose, p.Owner, p.KeyID, p.PublicKey), p.Proof) {
			return nil, fmt.Errorf("key added: proof of possession is invalid")
		}
		next.keys[vk.id] = &RingKey{VerifyingKey: vk, purpose: p.Purpose, owner: p.Owner, from: pos + 1, until: math.MaxUint64}
	case TypeKeyRevoked:
		var p KeyRevokedPayload
		if err := json.Unmarshal(payload, &p); err != nil {
			return nil, fmt.Errorf("key revoked payload: %w", err)
		}
		k, ok := next.keys[p.KeyID]
		if !ok || k.until != math.MaxUint64 {
			return nil, fmt.Errorf("key revoked: key %q is not in force", p.KeyID)
		}
		if k.purpose == PurposeLog {
			return nil, fmt.Errorf("key revoked: the log key %q can only be rotated", p.KeyID)
		}
		k.until = pos + 1
	default:
		return nil, fmt.Errorf("unknown log event type %q", typ)
	}
	return next, nil
}

package ledger

import (
	"bytes"
	"cmp"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
)

// ErrUnverified: a record does not continue the log as its keys signed it (see ChainVerifier).
var ErrUnverified = errors.New("record does not verify")

// ErrTooManyPending: more records wait for a checkpoint than a ChainVerifier holds; it dropped
// them all (read them again from where it stands).
var ErrTooManyPending = errors.New("too many records wait for a checkpoint")

// MaxPendingRecords bounds the records a ChainVerifier holds while they wait for a checkpoint.
const MaxPendingRecords = 100_000

// ChainVerifier takes copies of a log's records (as a node reads the relayed log from NATS,
// where anyone who may publish can add messages) and lets through exactly the log: the records,
// in order, that a checkpoint the log key signed covers.
//
// Every append batch ends with a checkpoint: a C2SP signed note of the log's size and the RFC
// 6962 Merkle root of all leaves, a leaf binding a record's position, stream version, time,
// envelope, producer signature and proof. Records are held (by their chain hash) until a record
// arrives with the checkpoint of its batch; the verifier then follows prev_hash back from it to
// what it has verified, checks that path as Verify checks the stored log (the hash chain, each
// record signed in its producer's batch by a key of the log's key history in force at its
// position, a producer key signing only its own stream, "$log" records moving that history on)
// and that the checkpoint, signed by the log key in force after the path, has the path's size
// and Merkle root. Only then are the path's records released. Copies placed elsewhere, re-chained
// or changed do not hash to a signed root; they stay held and are dropped once passed.
//
// The trust anchor is the genesis record: it must name the expected origin. A ChainVerifier is
// not safe for concurrent use.
type ChainVerifier struct {
	origin         string // expected origin
	genesis        []byte // expected hash of the first record
	producerStream func(owner string) string
	next           uint64
	lastHash       []byte
	ring           *KeyRing
	rng            *compact.Range                      // the Merkle tree's frontier over the first next leaves
	pending        map[[HashSize]byte]*pendingRecord   // held records by chain hash
	children       map[[HashSize]byte][]*pendingRecord // held records by their prev_hash
	byPos          map[uint64][][HashSize]byte         // held records' hashes by position
	// The last batch signature that verified: the records of one batch share it, and checking
	// it again is most of the cost of a record.
	lastKey          string
	lastSig, lastMsg []byte
	// skippable: the types it takes withheld (AcceptWithheld); nil none.
	skippable func(eventType string) bool
}

// NewChainVerifier expects the log named origin whose first record hashes to genesis (the trust
// anchor: taken from the log's owner, e.g. the control plane's API, never from the copies).
// producerStream names the one stream a producer key (a node's) may sign, by the key's owner;
// every other stream takes only the log key. (The store's ingester enforces it when it writes;
// a reader must not take a producer's record anywhere else.)
func NewChainVerifier(origin string, genesis []byte, producerStream func(owner string) string) *ChainVerifier {
	return &ChainVerifier{origin: origin, genesis: slices.Clone(genesis), producerStream: producerStream, ring: &KeyRing{keys: map[string]*RingKey{}},
		rng:     RangeFactory.NewEmptyRange(0),
		pending: map[[HashSize]byte]*pendingRecord{}, children: map[[HashSize]byte][]*pendingRecord{}, byPos: map[uint64][][HashSize]byte{}}
}

// Next is the position of the first record not verified yet.
func (v *ChainVerifier) Next() uint64 { return v.next }

// Offer takes a copy of a record, and the checkpoint note that came with it ("" none). It returns
// the records now verified, in position order (none while records wait for their batch's
// checkpoint). A record behind Next, one that does not hash as it says, or a checkpoint that
// does not verify over the records it closes is refused with an error wrapping ErrUnverified;
// what was verified stays as it was. rec must carry what was hashed and signed:
// StoredSchemaVersion, StoredPayload, Signature, SignatureProof, PrevHash and Hash.
func (v *ChainVerifier) Offer(rec *Record, checkpoint string) ([]Record, error) {
	fail := func(format string, args ...any) ([]Record, error) {
		return nil, fmt.Errorf("%w: position %d: %s", ErrUnverified, rec.Position, fmt.Sprintf(format, args...))
	}
	if rec.Position < v.next {
		return fail("the log is verified up to %d", v.next)
	}
	if rec.Position-v.next >= MaxPendingRecords {
		return fail("too far ahead of position %d", v.next)
	}
	if len(rec.PrevHash) != HashSize || len(rec.Hash) != HashSize {
		return fail("prev_hash and hash must have %d bytes", HashSize)
	}
	var computed [HashSize]byte
	if rec.Withheld {
		// Nothing to hash: the checkpoint's root covers its leaf hash, an attestation its type.
		if v.skippable == nil || len(rec.LeafHash) != HashSize {
			return fail("withheld, and this reader takes no withheld records (or the leaf hash is malformed)")
		}
		computed = [HashSize]byte(rec.Hash)
	} else if computed = rec.ChainHash(); !bytes.Equal(computed[:], rec.Hash) {
		return fail("its bytes hash to %x, not to the hash it carries", computed)
	}
	p, held := v.pending[computed]
	if !held {
		if len(v.pending) >= MaxPendingRecords {
			clear(v.pending)
			clear(v.children)
			clear(v.byPos)
			return nil, fmt.Errorf("%w (%d); verified up to %d", ErrTooManyPending, MaxPendingRecords, v.next)
		}
		p = &pendingRecord{rec: *rec}
		v.pending[computed] = p
		prev := [HashSize]byte(rec.PrevHash)
		v.children[prev] = append(v.children[prev], p)
		v.byPos[rec.Position] = append(v.byPos[rec.Position], computed)
	}
	if checkpoint != "" && !slices.Contains(p.checkpoints, checkpoint) && len(p.checkpoints) < maxNotesPerRecord {
		p.checkpoints = append(p.checkpoints, checkpoint) // a copy may have come with another note first
	}
	// The checkpoints this record can complete: its own, and those of records held after it
	// whose path it may fill. (Nothing else changed, so no other held checkpoint can.)
	var out []Record
	var offeredErr error
	for _, q := range v.closersFrom(p) {
		if q.rec.Position < v.next {
			continue // taken in by a checkpoint further up
		}
		path := v.pathTo(q)
		if path == nil {
			continue // its predecessors have not all arrived (or it is not the log's)
		}
		ring, rng, lastHash, err := v.verifyPath(path)
		if err == nil {
			err = v.checkWithheld(path, ring)
		}
		if err == nil {
			// The notes that do not close this path go; the records stay held.
			var closed bool
			q.checkpoints = slices.DeleteFunc(q.checkpoints, func(note string) bool {
				if closed {
					return false
				}
				if cerr := v.verifyCheckpoint(note, ring, rng, q.rec.Position+1); cerr != nil {
					err = cerr
					return true
				}
				closed = true
				return false
			})
			if closed {
				err = nil
			}
		}
		if err != nil {
			if q == p {
				offeredErr = fmt.Errorf("%w: position %d: %w", ErrUnverified, q.rec.Position, err)
			}
			continue
		}
		for _, r := range path {
			out = append(out, *r)
		}
		from := v.next
		v.ring, v.rng, v.lastHash, v.next = ring, rng, lastHash, q.rec.Position+1
		v.prune(from)
	}
	if len(out) > 0 {
		return out, nil
	}
	return nil, offeredErr
}

// maxExplore bounds how many held records one Offer looks through for checkpoints;
// maxNotesPerRecord how many different checkpoint notes a held record keeps.
const (
	maxExplore        = 4096
	maxNotesPerRecord = 4
)

// closersFrom lists p and the records held after it (by prev_hash, the next position only,
// breadth first and first arrived first, so that copies published later do not hide the
// genuine one) that came with a checkpoint, lowest position first.
func (v *ChainVerifier) closersFrom(p *pendingRecord) []*pendingRecord {
	var out []*pendingRecord
	queue := []*pendingRecord{p}
	for seen := 0; len(queue) > 0 && seen < maxExplore; seen++ {
		q := queue[0]
		queue = queue[1:]
		if len(q.checkpoints) > 0 {
			out = append(out, q)
		}
		for _, c := range v.children[[HashSize]byte(q.rec.Hash)] {
			if c.rec.Position == q.rec.Position+1 {
				queue = append(queue, c)
			}
		}
	}
	slices.SortStableFunc(out, func(a, b *pendingRecord) int { return cmp.Compare(a.rec.Position, b.rec.Position) })
	return out
}

// prune drops what is held for the positions from..Next (verified now, or not the log's).
func (v *ChainVerifier) prune(from uint64) {
	for pos := from; pos < v.next; pos++ {
		for _, h := range v.byPos[pos] {
			r := v.pending[h]
			delete(v.pending, h)
			if r == nil {
				continue
			}
			prev := [HashSize]byte(r.rec.PrevHash)
			v.children[prev] = slices.DeleteFunc(v.children[prev], func(k *pendingRecord) bool { return k == r })
			if len(v.children[prev]) == 0 {
				delete(v.children, prev)
			}
		}
		delete(v.byPos, pos)
	}
}

// pendingRecord is a record held until a checkpoint covers it.
type pendingRecord struct {
	rec         Record
	checkpoints []string // the notes that came with it (or with copies of it), not yet found wrong
}

// pathTo follows prev_hash back from q to what is verified: the records from Next to q, or nil
// when one is missing.
func (v *ChainVerifier) pathTo(q *pendingRecord) []*Record {
	path := []*Record{&q.rec}
	for cur := &q.rec; cur.Position > v.next; {
		prev, ok := v.pending[[HashSize]byte(cur.PrevHash)]
		if !ok || prev.rec.Position != cur.Position-1 {
			return nil
		}
		path = append(path, &prev.rec)
		cur = &prev.rec
	}
	slices.Reverse(path)
	return path
}

// ChainHash is the hash the record's bytes give chained to its PrevHash (what Hash must be),
// from what was stored: StoredSchemaVersion, StoredPayload, Signature and SignatureProof.
func (rec *Record) ChainHash() [HashSize]byte {
	_, leaf := RecordLeaf(rec.Position, rec.StreamVersion, rec.RecordedAt, envelopeOf(rec), rec.Signature, rec.SignatureProof)
	return ChainHash(rec.PrevHash, leaf)
}

func envelopeOf(rec *Record) *Envelope {
	return &Envelope{EventID: rec.EventID, StreamID: rec.StreamID, Type: rec.Type, SchemaVersion: rec.StoredSchemaVersion,
		KeyID: rec.KeyID, Payload: rec.StoredPayload, Metadata: rec.Metadata}
}

// verifyPath checks records that continue the verified log, in order, and returns the key
// history, Merkle range and chain hash after them. It changes nothing in v.
func (v *ChainVerifier) verifyPath(path []*Record) (*KeyRing, *compact.Range, []byte, error) {
	ring := v.ring
	rng, err := RangeFactory.NewRange(0, v.next, slices.Clone(v.rng.Hashes()))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("merkle range: %w", err)
	}
	prev := v.lastHash
	if prev == nil {
		prev = make([]byte, HashSize)
	}
	for _, rec := range path {
		if !bytes.Equal(rec.PrevHash, prev) {
			return nil, nil, nil, fmt.Errorf("position %d: prev_hash %x is not the hash of the record before (%x)", rec.Position, rec.PrevHash, prev)
		}
		if rec.Withheld {
			// Its leaf goes into the root the checkpoint must match; checkWithheld checks the
			// rest. The key history does not move: "$log" records are never withheld.
			if err := rng.Append(rec.LeafHash, nil); err != nil {
				return nil, nil, nil, fmt.Errorf("merkle append: %w", err)
			}
			prev = rec.Hash
			continue
		}
		envelope, leaf := RecordLeaf(rec.Position, rec.StreamVersion, rec.RecordedAt, envelopeOf(rec), rec.Signature, rec.SignatureProof)
		// A record is signed under the key history as it stood before it, except the genesis,
		// which is signed by the key it introduces; a "$log" record moves the history on.
		signing, after := ring, ring
		if rec.StreamID == LogStream {
			next, err := ring.Apply(rec.Position, rec.Type, rec.StoredPayload)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("position %d: %w", rec.Position, err)
			}
			if rec.Position == 0 {
				if next.origin != v.origin {
					return nil, nil, nil, fmt.Errorf("the genesis names the log %q, not %q", next.origin, v.origin)
				}
				if !bytes.Equal(rec.Hash, v.genesis) {
					return nil, nil, nil, fmt.Errorf("the genesis hashes to %x, the log's to %x", rec.Hash, v.genesis)
				}
				signing = next
			}
			after = next
		}
		signer, _, detail := signing.SignerAt(rec.KeyID, rec.Position)
		if signer == nil {
			return nil, nil, nil, fmt.Errorf("position %d: %s", rec.Position, detail)
		}
		if signer.purpose != PurposeLog && (v.producerStream == nil || rec.StreamID != v.producerStream(signer.owner)) {
			return nil, nil, nil, fmt.Errorf("position %d: key %s is a %s key of %q: it may not sign a record of stream %q",
				rec.Position, rec.KeyID, signer.purpose, signer.owner, rec.StreamID)
		}
		root, count, err := BatchRoot(envelope, rec.SignatureProof)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("position %d: the signature proof is malformed: %w", rec.Position, err)
		}
		msg := SignedMessage(count, root)
		if rec.KeyID != v.lastKey || !bytes.Equal(rec.Signature, v.lastSig) || !bytes.Equal(msg, v.lastMsg) {
			if !signer.Verify(msg, rec.Signature) {
				return nil, nil, nil, fmt.Errorf("position %d: the signature does not verify with key %s", rec.Position, rec.KeyID)
			}
			v.lastKey, v.lastSig, v.lastMsg = rec.KeyID, slices.Clone(rec.Signature), msg
		}
		if err := rng.Append(rfc6962.DefaultHasher.HashLeaf(leaf), nil); err != nil {
			return nil, nil, nil, fmt.Errorf("merkle append: %w", err)
		}
		ring, prev = after, rec.Hash
	}
	return ring, rng, slices.Clone(prev), nil
}

// verifyCheckpoint checks a checkpoint note against the log key in force after the records
// (ring) and the Merkle root of the first size leaves (rng).
func (v *ChainVerifier) verifyCheckpoint(text string, ring *KeyRing, rng *compact.Range, size uint64) error {
	k := ring.keys[ring.logKey]
	if k == nil {
		return errors.New("no log key is in force")
	}
	signed, err := OpenCheckpointWith(text, v.origin, k.VerifyingKey)
	if err != nil {
		return err
	}
	root, err := rng.GetRootHash(nil)
	if err != nil {
		return fmt.Errorf("merkle root: %w", err)
	}
	if signed.Size != size || !bytes.Equal(signed.Root, root) {
		return fmt.Errorf("the checkpoint signs size %d, root %x; the records up to %d hash to %x", signed.Size, signed.Root, size, root)
	}
	return nil
}

// A ChainVerifier's state, for a node's snapshot: the position it expects, the hash before it,
// the Merkle frontier and the key history.
type chainState struct {
	Origin   string          `json:"origin"`
	Genesis  []byte          `json:"genesis"`
	Next     uint64          `json:"next"`
	LastHash []byte          `json:"last_hash,omitempty"`
	Frontier [][]byte        `json:"frontier,omitempty"`
	LogKey   string          `json:"log_key,omitempty"`
	Keys     []chainStateKey `json:"keys"`
}

type chainStateKey struct {
	PublicKey []byte     `json:"public_key"`
	Purpose   KeyPurpose `json:"purpose"`
	Owner     string     `json:"owner,omitempty"`
	From      uint64     `json:"from"`
	Until     *uint64    `json:"until,omitempty"` // absent while in force
}

// MarshalJSON saves the verified state (records held for a checkpoint are not saved: they are
// read again).
func (v *ChainVerifier) MarshalJSON() ([]byte, error) {
	s := chainState{Origin: v.origin, Genesis: v.genesis, Next: v.next, LastHash: v.lastHash, Frontier: v.rng.Hashes(), LogKey: v.ring.logKey, Keys: []chainStateKey{}}
	for _, k := range v.ring.keys {
		sk := chainStateKey{PublicKey: k.pub, Purpose: k.purpose, Owner: k.owner, From: k.from}
		if k.until != math.MaxUint64 {
			u := k.until
			sk.Until = &u
		}
		s.Keys = append(s.Keys, sk)
	}
	slices.SortFunc(s.Keys, func(a, b chainStateKey) int { return bytes.Compare(a.PublicKey, b.PublicKey) })
	return json.Marshal(s)
}

// UnmarshalJSON restores a state MarshalJSON saved (into a verifier made by NewChainVerifier,
// whose genesis it must match and whose producerStream and AcceptWithheld it keeps).
func (v *ChainVerifier) UnmarshalJSON(b []byte) error {
	var s chainState
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	ring := &KeyRing{logKey: s.LogKey, keys: map[string]*RingKey{}}
	if s.Next > 0 {
		ring.origin = s.Origin
	}
	for _, k := range s.Keys {
		vk, err := newVerifyingKey(ed25519.PublicKey(k.PublicKey))
		if err != nil {
			return fmt.Errorf("chain state: %w", err)
		}
		rk := &RingKey{VerifyingKey: vk, purpose: k.Purpose, owner: k.Owner, from: k.From, until: math.MaxUint64}
		if k.Until != nil {
			rk.until = *k.Until
		}
		ring.keys[vk.id] = rk
	}
	if s.Next > 0 && (len(s.LastHash) != HashSize || ring.keys[s.LogKey] == nil) {
		return errors.New("chain state: no hash or no log key after the genesis")
	}
	if !bytes.Equal(s.Genesis, v.genesis) {
		return fmt.Errorf("chain state: of the log whose genesis hashes to %x, not %x", s.Genesis, v.genesis)
	}
	rng, err := RangeFactory.NewRange(0, s.Next, s.Frontier)
	if err != nil {
		return fmt.Errorf("chain state: merkle frontier: %w", err)
	}
	*v = ChainVerifier{origin: s.Origin, genesis: v.genesis, producerStream: v.producerStream, skippable: v.skippable, next: s.Next, lastHash: s.LastHash, ring: ring,
		rng: rng, pending: map[[HashSize]byte]*pendingRecord{}, children: map[[HashSize]byte][]*pendingRecord{},
		byPos: map[uint64][][HashSize]byte{}}
	return nil
}

// Genesis is the hash of the first record of the log the verifier expects.
func (v *ChainVerifier) Genesis() []byte { return v.genesis }

// Origin is the origin of the log the verifier expects.
func (v *ChainVerifier) Origin() string { return v.origin }

// LogKey is the log key in force at Next (nil before the genesis).
func (v *ChainVerifier) LogKey() ed25519.PublicKey {
	if k := v.ring.keys[v.ring.logKey]; k != nil {
		return k.pub
	}
	return nil
}

// ProducerKeys are the keys of purpose node (PurposeNode) owned by owner that are in force at
// Next: a node's enrolled event keys, none once its key was revoked (the node removed) or when
// no such node was ever enrolled.
func (v *ChainVerifier) ProducerKeys(owner string) []ed25519.PublicKey {
	var out []ed25519.PublicKey
	for _, k := range v.ring.keys {
		if k.purpose == PurposeNode && k.owner == owner && k.until == math.MaxUint64 {
			out = append(out, k.pub)
		}
	}
	return out
}

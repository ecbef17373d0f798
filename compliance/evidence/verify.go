package evidence

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

// VerifyOptions is what the auditor brings.
type VerifyOptions struct {
	// TrustedCheckpoint is a checkpoint note saved earlier, outside the operator's reach: the
	// bundle's log must extend it (a rolled-back or rewritten log fails, even re-signed).
	TrustedCheckpoint string
	// VerifierKey pins the log key: a C2SP note verifier key that must be a log key of the
	// bundle's key history (verify's output, GET /api/v1/log's verifier_key).
	VerifierKey string
}

// Problem is one thing wrong with a bundle: where (a position, or a file) and what.
type Problem struct {
	Position *uint64 `json:"position,omitempty"`
	File     string  `json:"file,omitempty"`
	Kind     string  `json:"kind"`
	Detail   string  `json:"detail"`
}

func (p Problem) String() string {
	switch {
	case p.Position != nil:
		return fmt.Sprintf("position %d: %s: %s", *p.Position, p.Kind, p.Detail)
	case p.File != "":
		return fmt.Sprintf("%s: %s: %s", p.File, p.Kind, p.Detail)
	}
	return p.Kind + ": " + p.Detail
}

// Report is the outcome of Verify: intact when Problems is empty.
type Report struct {
	Manifest *Manifest `json:"manifest,omitempty"`
	Records  uint64    `json:"records"`
	// TrustedSize is the size of the trusted checkpoint the bundle was found to extend.
	TrustedSize uint64    `json:"trusted_size,omitempty"`
	Problems    []Problem `json:"problems,omitempty"`
}

// OK reports an intact bundle.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// maxProblems bounds a report: a bundle damaged everywhere is named by its first problems.
const maxProblems = 50

func (r *Report) add(pos *uint64, file, kind, format string, args ...any) {
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, Problem{Position: pos, File: file, Kind: kind, Detail: fmt.Sprintf(format, args...)})
	}
}

func at(pos uint64) *uint64 { return &pos }

// Verify checks a bundle read from r. It returns an error only when the bundle cannot be read
// as a zstd-compressed tar archive (ErrBundle) or r fails; everything wrong inside it is a
// Problem of the report.
func Verify(r io.Reader, opts VerifyOptions) (Report, error) {
	files, err := ReadBundle(r)
	if err != nil {
		return Report{}, err
	}
	return VerifyFiles(files, opts), nil
}

// VerifyFiles checks a bundle's files (see Verify).
func VerifyFiles(files map[string][]byte, opts VerifyOptions) Report {
	var rep Report
	for _, name := range sortedNames(files) {
		if name != FileManifest && name != FileManifestSig && name != FilePersonal && !slices.Contains(hashedFiles, name) {
			rep.add(nil, name, "unexpected_file", "a bundle holds no such file")
		}
	}
	for _, name := range append([]string{FileManifest, FileManifestSig}, hashedFiles...) {
		if _, ok := files[name]; !ok {
			rep.add(nil, name, "missing_file", "the bundle does not hold it")
		}
	}
	if !rep.OK() {
		return rep
	}
	var m Manifest
	if err := json.Unmarshal(files[FileManifest], &m); err != nil {
		rep.add(nil, FileManifest, "malformed", "%v", err)
		return rep
	}
	rep.Manifest = &m
	checkPersonalFile(files, &m, &rep)
	if m.Format != Format {
		rep.add(nil, FileManifest, "unknown_format", "format %q, this verifier reads %q", m.Format, Format)
		return rep
	}
	// The files' hashes (the records file is most of the bundle) are taken while the records are
	// checked; their problems come first in the report.
	sums := make([]string, len(hashedFiles))
	var wg sync.WaitGroup
	wg.Go(func() {
		for i, name := range hashedFiles {
			sums[i] = sha256Hex(files[name])
		}
	})
	checked := Report{Manifest: &m}
	v := &verifier{rep: &checked, m: &m}
	v.check(files, opts)
	wg.Wait()
	for i, name := range hashedFiles {
		if sums[i] != m.Files[name] {
			rep.add(nil, name, "file_hash_mismatch", "SHA-256 %s, the manifest says %s (the file was changed)", sums[i], m.Files[name])
		}
	}
	rep.Records, rep.TrustedSize = checked.Records, checked.TrustedSize
	for _, p := range checked.Problems {
		if len(rep.Problems) < maxProblems {
			rep.Problems = append(rep.Problems, p)
		}
	}
	return rep
}

type verifier struct {
	rep    *Report
	m      *Manifest
	leaves [][]byte
	// rings[i] is the key history after the i-th "$log" record; logPos[i] its position.
	rings  []*ledger.KeyRing
	logPos []uint64
	// tree answers roots and proofs of every size up to the newest checkpoint.
	tree *prefix
	// The last batch signature that verified: the records of a batch share it, and checking it
	// again would be most of the cost of a record.
	lastKey          string
	lastSig, lastMsg []byte
}

// record is a decoded bundle entry.
type record struct {
	Entry
	leaf     ledger.Leaf
	env      ledger.Envelope
	inWindow bool
	// Computed once, on every core, before the records are checked in order (precompute):
	// leafHash is the RFC 6962 hash of Leaf; chain the chain hash of PrevHash and Leaf; signed
	// the message the batch signature covers (SignedMessage of the batch root the signature
	// proof gives), or sigErr why there is none.
	leafHash []byte
	chain    [ledger.HashSize]byte
	signed   []byte
	sigErr   error
}

func (v *verifier) check(files map[string][]byte, opts VerifyOptions) {
	m, rep := v.m, v.rep
	if m.From > m.To || m.To >= m.WindowCheckpoint || m.WindowCheckpoint > m.NewestCheckpoint {
		rep.add(nil, FileManifest, "bad_window", "window %d..%d, checkpoints %d and %d", m.From, m.To, m.WindowCheckpoint, m.NewestCheckpoint)
		return
	}
	leaves := files[FileLeaves]
	if uint64(len(leaves)) != m.NewestCheckpoint*ledger.HashSize {
		rep.add(nil, FileLeaves, "bad_size", "%d bytes, want %d leaf hashes of %d bytes", len(leaves), m.NewestCheckpoint, ledger.HashSize)
		return
	}
	v.leaves = make([][]byte, m.NewestCheckpoint)
	for i := range v.leaves {
		v.leaves[i] = leaves[i*ledger.HashSize : (i+1)*ledger.HashSize]
	}
	v.tree = newPrefix(v.leaves)
	recs := v.decode(files[FileKeyHistory], FileKeyHistory, false)
	recs = append(recs, v.decode(files[FileRecords], FileRecords, true)...)
	slices.SortStableFunc(recs, func(a, b *record) int { return cmpU64(a.leaf.Position, b.leaf.Position) })
	v.checkCoverage(recs)
	precompute(recs)
	v.checkRecords(recs)
	if len(v.rings) == 0 {
		rep.add(at(0), FileKeyHistory, "no_genesis", "the bundle holds no genesis record: nothing to check signatures with")
		return
	}
	window := v.checkCheckpoint(files[FileWindowCheckpoint], FileWindowCheckpoint, m.WindowCheckpoint)
	newest := v.checkCheckpoint(files[FileNewestCheckpoint], FileNewestCheckpoint, m.NewestCheckpoint)
	for _, r := range recs {
		if r.inWindow && window != nil && !v.proven(r, m.WindowCheckpoint) {
			rep.add(at(r.leaf.Position), FileRecords, "bad_inclusion_proof", "the record is not proven in checkpoint %d", m.WindowCheckpoint)
		}
		if !r.inWindow && newest != nil && !v.proven(r, m.NewestCheckpoint) {
			rep.add(at(r.leaf.Position), FileKeyHistory, "bad_inclusion_proof", "the key record is not proven in checkpoint %d", m.NewestCheckpoint)
		}
	}
	if window != nil && newest != nil {
		c := files[FileConsistency]
		var hashes [][]byte
		for i := 0; i+ledger.HashSize <= len(c); i += ledger.HashSize {
			hashes = append(hashes, c[i:i+ledger.HashSize])
		}
		if len(c)%ledger.HashSize != 0 || proof.VerifyConsistency(rfc6962.DefaultHasher, m.WindowCheckpoint, m.NewestCheckpoint, hashes, window.Root, newest.Root) != nil {
			rep.add(nil, FileConsistency, "bad_consistency_proof", "it does not prove checkpoint %d extends checkpoint %d", m.NewestCheckpoint, m.WindowCheckpoint)
		}
	}
	v.checkManifestSignature(files[FileManifestSig], files[FileManifest])
	if opts.VerifierKey != "" {
		v.checkPinnedKey(opts.VerifierKey)
	}
	if opts.TrustedCheckpoint != "" {
		v.checkTrusted(opts.TrustedCheckpoint)
	}
	rep.Records = uint64(len(recs))
}

// proven: the record's inclusion proof proves it in the checkpoint of size, whose root the
// bundle's leaf hashes were found to give (checkCheckpoint). That holds exactly when the record
// hashes to the leaf hash at its position and the proof is the one RFC 6962 proof of that
// position, read off the verifier's tree (any other proof would need a hash collision).
func (v *verifier) proven(r *record, size uint64) bool {
	pos := r.leaf.Position
	if pos >= size || !bytes.Equal(r.leafHash, v.leaves[pos]) {
		return false
	}
	want := v.tree.inclusion(pos, size)
	if len(want) != len(r.Proof) {
		return false
	}
	for i := range want {
		if !bytes.Equal(want[i], r.Proof[i]) {
			return false
		}
	}
	return true
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// decode splits a records file and decodes each leaf.
func (v *verifier) decode(b []byte, file string, inWindow bool) []*record {
	entries, err := decodeEntries(b)
	if err != nil {
		var pos *uint64
		if n := len(entries); n > 0 && len(entries[n-1].Leaf) >= 12 {
			pos = at(binary.BigEndian.Uint64(entries[n-1].Leaf[4:12]) + 1)
		}
		v.rep.add(pos, file, "malformed", "%v", err)
	}
	out := make([]*record, 0, len(entries))
	for i := range entries {
		r := &record{Entry: entries[i], inWindow: inWindow}
		leaf, err := ledger.DecodeLeaf(r.Leaf)
		if err == nil {
			r.leaf = leaf
			r.env, err = ledger.DecodeEnvelope(leaf.Envelope)
		}
		if err != nil {
			var pos *uint64
			if len(r.Leaf) >= 12 {
				pos = at(binary.BigEndian.Uint64(r.Leaf[4:12]))
			}
			v.rep.add(pos, file, "malformed", "entry %d: %v", i, err)
			continue
		}
		out = append(out, r)
	}
	return out
}

// checkCoverage: the window holds every position from From to To once, the key history only
// "$log" records outside it.
func (v *verifier) checkCoverage(recs []*record) {
	m := v.m
	want := m.From
	seen := map[uint64]bool{}
	withheld := withheldSet(m.Withheld, m.From, m.To)
	if m.OrgID == "" && len(m.Withheld) > 0 {
		v.rep.add(nil, FileManifest, "bad_window", "a bundle of the whole log withholds records")
	}
	missing := func(pos uint64) {
		if !withheld[pos] {
			v.rep.add(at(pos), FileRecords, "missing", "the window %d..%d has no record at this position", m.From, m.To)
		}
	}
	for _, r := range recs {
		pos := r.leaf.Position
		if seen[pos] {
			v.rep.add(at(pos), "", "duplicate", "the bundle holds two records at this position")
			continue
		}
		seen[pos] = true
		if pos >= m.NewestCheckpoint {
			v.rep.add(at(pos), "", "past_checkpoint", "the record lies past the newest checkpoint (%d)", m.NewestCheckpoint)
			continue
		}
		if !r.inWindow {
			if r.env.StreamID != ledger.LogStream || (pos >= m.From && pos <= m.To) {
				v.rep.add(at(pos), FileKeyHistory, "not_key_history", "a record of stream %q in the key history", r.env.StreamID)
			}
			continue
		}
		if pos < m.From || pos > m.To {
			v.rep.add(at(pos), FileRecords, "outside_window", "the window is %d..%d", m.From, m.To)
			continue
		}
		if withheld[pos] {
			v.rep.add(at(pos), FileRecords, "withheld_present", "the manifest says this record is withheld, yet the bundle holds it")
		}
		for ; want < pos; want++ {
			missing(want)
		}
		want = pos + 1
	}
	for ; want <= m.To; want++ {
		missing(want)
	}
	if n := uint64(countWindow(recs)); n != m.Records {
		v.rep.add(nil, FileRecords, "count_mismatch", "%d records, the manifest says %d", n, m.Records)
	}
}

func countWindow(recs []*record) int {
	n := 0
	for _, r := range recs {
		if r.inWindow {
			n++
		}
	}
	return n
}

// precompute hashes every record on all cores: the per-record hashing is independent, and
// checkRecords then only compares, in position order, and verifies each batch's signature once.
func precompute(recs []*record) {
	workers := min(runtime.GOMAXPROCS(0), max(1, len(recs)/4096))
	var wg sync.WaitGroup
	for w := range workers {
		part := recs[w*len(recs)/workers : (w+1)*len(recs)/workers]
		wg.Go(func() {
			for _, r := range part {
				r.leafHash = rfc6962.DefaultHasher.HashLeaf(r.Leaf)
				r.chain = ledger.ChainHash(r.PrevHash, r.Leaf)
				root, count, err := ledger.BatchRoot(r.leaf.Envelope, r.leaf.Proof)
				if err != nil {
					r.sigErr = err
					continue
				}
				r.signed = ledger.SignedMessage(count, root)
			}
		})
	}
	wg.Wait()
}

// checkRecords checks every record in position order: its hash, the chain within the window,
// its leaf hash, its producer's signature under the key history in force, "$log" records folding
// into that history (whose stream versions must count 1, 2, 3 …: none left out).
func (v *verifier) checkRecords(recs []*record) {
	ring := ledger.NewKeyRing()
	var prev *record
	var logVersion uint64
	for _, r := range recs {
		pos := r.leaf.Position
		file := FileKeyHistory
		if r.inWindow {
			file = FileRecords
		}
		if !bytes.Equal(r.chain[:], r.Hash) {
			v.rep.add(at(pos), file, string(ledger.FailHashMismatch), "the record's bytes hash to %x, not to its hash %x (it was changed)", r.chain, r.Hash)
		}
		if pos == 0 && !bytes.Equal(r.PrevHash, make([]byte, ledger.HashSize)) {
			v.rep.add(at(0), file, string(ledger.FailChainBreak), "the first record's prev_hash is not 32 zero bytes")
		}
		if r.inWindow && prev != nil && prev.inWindow && prev.leaf.Position+1 == pos && !bytes.Equal(r.PrevHash, prev.Hash) {
			v.rep.add(at(pos), file, string(ledger.FailChainBreak), "prev_hash %x is not the hash of position %d (%x)", r.PrevHash, pos-1, prev.Hash)
		}
		if pos < uint64(len(v.leaves)) && !bytes.Equal(r.leafHash, v.leaves[pos]) {
			v.rep.add(at(pos), file, "leaf_mismatch", "the record does not hash to the leaf hash at its position in %s", FileLeaves)
		}
		signing, after := ring, ring
		if r.env.StreamID == ledger.LogStream {
			logVersion++
			if r.leaf.StreamVersion != logVersion {
				v.rep.add(at(pos), file, string(ledger.FailStreamVersion), "the key history jumps from version %d to %d: a key record is left out", logVersion-1, r.leaf.StreamVersion)
				logVersion = r.leaf.StreamVersion
			}
			next, err := ring.Apply(pos, r.env.Type, r.env.Payload)
			if err != nil {
				v.rep.add(at(pos), file, string(ledger.FailKeyEvent), "%v", err)
			} else {
				after = next
				if pos == 0 {
					signing = next
				}
				v.rings = append(v.rings, next)
				v.logPos = append(v.logPos, pos)
			}
		}
		v.checkSignature(r, file, signing)
		ring, prev = after, r
	}
	if len(v.rings) > 0 && ring.Origin() != v.m.Origin {
		v.rep.add(nil, FileManifest, "origin_mismatch", "the manifest names log %q, the genesis %q", v.m.Origin, ring.Origin())
	}
}

func (v *verifier) checkSignature(r *record, file string, ring *ledger.KeyRing) {
	pos := r.leaf.Position
	signer, kind, detail := ring.SignerAt(r.env.KeyID, pos)
	if signer == nil {
		v.rep.add(at(pos), file, string(kind), "%s", detail)
		return
	}
	if signer.Purpose() != ledger.PurposeLog {
		owner := ""
		for _, k := range ring.Infos() {
			if k.KeyID == r.env.KeyID {
				owner = k.Owner
			}
		}
		if r.env.StreamID != domain.NodeFactsStream(owner) {
			v.rep.add(at(pos), file, string(ledger.FailBadSignature), "key %s of %q may not sign a record of stream %q", r.env.KeyID, owner, r.env.StreamID)
			return
		}
	}
	if r.sigErr != nil {
		v.rep.add(at(pos), file, string(ledger.FailBadSignature), "the signature proof is malformed: %v", r.sigErr)
		return
	}
	msg := r.signed
	if r.env.KeyID == v.lastKey && bytes.Equal(r.leaf.Signature, v.lastSig) && bytes.Equal(msg, v.lastMsg) {
		return
	}
	if !signer.Verify(msg, r.leaf.Signature) {
		v.rep.add(at(pos), file, string(ledger.FailBadSignature), "the signature does not verify with key %s", r.env.KeyID)
		return
	}
	v.lastKey, v.lastSig, v.lastMsg = r.env.KeyID, r.leaf.Signature, msg
}

// ringAt is the key history in force after the records before size.
func (v *verifier) ringAt(size uint64) *ledger.KeyRing {
	ring := v.rings[0]
	for i, p := range v.logPos {
		if p < size {
			ring = v.rings[i]
		}
	}
	return ring
}

// checkCheckpoint checks a checkpoint note of the bundle: its size, its signature by the log key
// in force at that size, and that the bundle's leaf hashes give its root.
func (v *verifier) checkCheckpoint(note []byte, file string, size uint64) *ledger.SignedCheckpoint {
	key := v.ringAt(size).LogKey()
	if key == nil {
		v.rep.add(nil, file, string(ledger.FailCheckpointSignature), "no log key is in force at size %d", size)
		return nil
	}
	cp, err := ledger.OpenCheckpointWith(string(note), v.m.Origin, key.VerifyingKey)
	if err != nil {
		v.rep.add(nil, file, string(ledger.FailCheckpointSignature), "not signed by the log key in force at size %d (%s): %v", size, ledger.KeyID(key.PublicKey()), err)
		return nil
	}
	if cp.Size != size {
		v.rep.add(nil, file, string(ledger.FailCheckpointMismatch), "size %d, the manifest says %d", cp.Size, size)
		return nil
	}
	if root := v.tree.root(size); !bytes.Equal(root, cp.Root) {
		v.rep.add(nil, file, string(ledger.FailCheckpointMismatch), "it signs root %x, the leaf hashes give %x", cp.Root, root)
		return nil
	}
	return &cp
}

func (v *verifier) checkManifestSignature(sigFile, manifest []byte) {
	var s ManifestSignature
	if err := json.Unmarshal(sigFile, &s); err != nil {
		v.rep.add(nil, FileManifestSig, "malformed", "%v", err)
		return
	}
	key := v.ringAt(v.m.NewestCheckpoint).LogKey()
	if key == nil || s.KeyID != v.m.LogKeyID || s.KeyID != ledger.KeyID(key.PublicKey()) {
		v.rep.add(nil, FileManifestSig, "manifest_bad_signature", "signed by %s; the log key in force at size %d is %s", s.KeyID, v.m.NewestCheckpoint, v.ringAt(v.m.NewestCheckpoint).LogKeyID())
		return
	}
	if !key.Verify(ManifestMessage(manifest), s.Signature) {
		v.rep.add(nil, FileManifestSig, "manifest_bad_signature", "the signature does not verify with key %s", s.KeyID)
	}
}

// logKeys lists the log keys of the key history as note verifier keys.
func (v *verifier) logKeys() []ledger.KeyInfo {
	var out []ledger.KeyInfo
	for _, k := range v.rings[len(v.rings)-1].Infos() {
		if k.Purpose == ledger.PurposeLog {
			out = append(out, k)
		}
	}
	return out
}

func (v *verifier) checkPinnedKey(vkey string) {
	var ids []string
	for _, k := range v.logKeys() {
		if k.VerifierKey == vkey {
			return
		}
		ids = append(ids, k.KeyID)
	}
	v.rep.add(nil, "", "untrusted_key", "the pinned key %q is not a log key of this bundle's key history (%s): it is not the log you trust",
		vkey, strings.Join(ids, ", "))
}

// checkTrusted: the trusted checkpoint names this log, is signed by one of its log keys, and the
// bundle's leaf hashes extend it.
func (v *verifier) checkTrusted(note string) {
	const file = "trusted checkpoint"
	var cp ledger.SignedCheckpoint
	var err error
	for _, k := range v.logKeys() {
		if cp, err = ledger.OpenCheckpoint(note, v.m.Origin, k.PublicKey); err == nil {
			break
		}
	}
	if err != nil || cp.Size == 0 {
		v.rep.add(nil, file, string(ledger.FailCheckpointSignature), "it is not a checkpoint of log %s signed by one of its log keys: %v", v.m.Origin, err)
		return
	}
	n := uint64(len(v.leaves))
	if cp.Size > n {
		v.rep.add(at(n), file, "rolled_back", "the trusted checkpoint vouches for %d records but the bundle's log holds %d: it was truncated or rolled back by %d records",
			cp.Size, n, cp.Size-n)
		return
	}
	if root := v.tree.root(cp.Size); !bytes.Equal(root, cp.Root) {
		v.rep.add(nil, file, "rewritten", "the bundle's first %d records hash to root %x but the trusted checkpoint signs %x: the log was rewritten (even if re-signed)",
			cp.Size, root, cp.Root)
		return
	}
	v.rep.TrustedSize = cp.Size
}

package evidence

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

// Format names the bundle layout this package writes and reads.
const Format = "tunnelplane-evidence/v1"

// ManifestContext separates the manifest signature from every other use of the log key.
const ManifestContext = "tunnelplane/evidence-manifest/v1\x00"

// The bundle's files, in the order they are written.
const (
	FileManifest         = "manifest.json"
	FileManifestSig      = "manifest.sig"
	FileRecords          = "records.bin"
	FileKeyHistory       = "keyhistory.bin"
	FileLeaves           = "leaves.bin"
	FileWindowCheckpoint = "checkpoint-window"
	FileNewestCheckpoint = "checkpoint-newest"
	FileConsistency      = "consistency.bin"
)

// hashedFiles are the files the manifest lists with their SHA-256.
var hashedFiles = []string{FileRecords, FileKeyHistory, FileLeaves, FileWindowCheckpoint, FileNewestCheckpoint, FileConsistency}

// maxFileBytes bounds what Verify reads of one file of a bundle (a hostile bundle could
// decompress without end).
const maxFileBytes = 8 << 30

// maxPresize bounds what ReadBundle allocates for a file on its header's word alone.
const maxPresize = 512 << 20

// ErrBundle reports a bundle that cannot be read at all: not zstd, not tar, a file missing.
var ErrBundle = errors.New("unreadable evidence bundle")

// Manifest describes a bundle; its exact bytes are signed (manifest.sig).
type Manifest struct {
	Format string `json:"format"`
	Origin string `json:"origin"`
	// ExportID is the id of the export.created record of this bundle (appended after it).
	ExportID string `json:"export_id"`
	// OrgID is the organization the bundle is scoped to; "" for the whole log. A scoped bundle
	// holds the organization's records of the window in full and withholds the others, whose
	// leaf hashes (leaves.bin) still let every root be recomputed.
	OrgID string `json:"org_id,omitempty"`
	// Withheld lists the window's positions whose records the bundle does not hold (other
	// organizations' records in a scoped bundle), as inclusive ranges in order.
	Withheld []PositionRange `json:"withheld,omitempty"`
	// From and To are the window's first and last positions (inclusive).
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
	// WindowCheckpoint is the size of the first checkpoint covering To (the end of its batch);
	// NewestCheckpoint the log's size when the bundle was made.
	WindowCheckpoint uint64 `json:"window_checkpoint"`
	NewestCheckpoint uint64 `json:"newest_checkpoint"`
	Records          uint64 `json:"records"`
	KeyRecords       uint64 `json:"key_records"`
	CreatedAt        string `json:"created_at"`
	CreatedBy        string `json:"created_by,omitempty"`
	// LogKeyID is the log key in force at NewestCheckpoint, which signs the manifest.
	LogKeyID string `json:"log_key_id"`
	// Files maps each other file to the hex SHA-256 of its bytes.
	Files map[string]string `json:"files"`
}

// PositionRange is the positions From..To, inclusive.
type PositionRange struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
}

// withheldSet expands ranges into a set, bounded by the window (a hostile manifest could name
// more).
func withheldSet(ranges []PositionRange, from, to uint64) map[uint64]bool {
	out := map[uint64]bool{}
	for _, r := range ranges {
		for p := max(r.From, from); p <= min(r.To, to) && r.From <= r.To; p++ {
			out[p] = true
		}
	}
	return out
}

// ManifestSignature is manifest.sig.
type ManifestSignature struct {
	KeyID     string `json:"key_id"`
	Signature []byte `json:"signature"` // Ed25519 over ManifestContext ‖ manifest.json
}

// ManifestMessage is what the log key signs for a manifest.
func ManifestMessage(manifest []byte) []byte {
	return append([]byte(ManifestContext), manifest...)
}

// Entry is one record in records.bin or keyhistory.bin: the canonical leaf bytes (which hold
// the whole record), the chain hashes around it and its RFC 6962 inclusion proof (in the tree of
// the window checkpoint for records.bin, of the newest for keyhistory.bin).
//
//	entry = u32 len ‖ leaf ‖ prev_hash (32) ‖ hash (32) ‖ u32 k ‖ k × 32-byte proof hashes
type Entry struct {
	Leaf     []byte
	PrevHash []byte
	Hash     []byte
	Proof    [][]byte
}

func appendEntry(dst []byte, e *Entry) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(e.Leaf)))
	dst = append(dst, e.Leaf...)
	dst = append(dst, e.PrevHash...)
	dst = append(dst, e.Hash...)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(e.Proof)))
	for _, h := range e.Proof {
		dst = append(dst, h...)
	}
	return dst
}

// maxProofHashes bounds an inclusion proof (a tree of 2^64 leaves needs 64).
const maxProofHashes = 64

// decodeEntries splits a records file; a malformed tail is reported with its byte offset, and
// the entries before it are returned.
func decodeEntries(b []byte) ([]Entry, error) {
	var out []Entry
	off := 0
	for off < len(b) {
		start := off
		fail := func(what string) ([]Entry, error) {
			return out, fmt.Errorf("malformed entry at byte %d (after %d entries): %s", start, len(out), what)
		}
		if len(b)-off < 4 {
			return fail("truncated length")
		}
		n := int(binary.BigEndian.Uint32(b[off:]))
		off += 4
		if n > len(b)-off || len(b)-off-n < 2*ledger.HashSize+4 {
			return fail("truncated leaf")
		}
		e := Entry{Leaf: b[off : off+n]}
		off += n
		e.PrevHash = b[off : off+ledger.HashSize]
		off += ledger.HashSize
		e.Hash = b[off : off+ledger.HashSize]
		off += ledger.HashSize
		k := int(binary.BigEndian.Uint32(b[off:]))
		off += 4
		if k > maxProofHashes || k*ledger.HashSize > len(b)-off {
			return fail("truncated proof")
		}
		e.Proof = make([][]byte, k)
		for i := range e.Proof {
			e.Proof[i] = b[off : off+ledger.HashSize]
			off += ledger.HashSize
		}
		out = append(out, e)
	}
	return out, nil
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// WriteBundle writes files as a tar archive compressed with zstd, in a fixed order with fixed
// headers, so the same contents give the same bytes.
func WriteBundle(w io.Writer, files map[string][]byte, at time.Time) error {
	zw, err := zstd.NewWriter(w)
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	tw := tar.NewWriter(zw)
	names := append([]string{FileManifest, FileManifestSig}, hashedFiles...)
	if _, ok := files[FilePersonal]; ok {
		names = append(names, FilePersonal)
	}
	for _, name := range names {
		b := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: at.UTC().Truncate(time.Second), Format: tar.FormatPAX}); err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
		if _, err := tw.Write(b); err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	return nil
}

// ReadBundle reads a bundle's files. Only a stream that is not zstd or tar, a file named twice or
// too large is an error (ErrBundle); which files are missing or unexpected is the verifier's
// finding.
func ReadBundle(r io.Reader) (map[string][]byte, error) {
	// One goroutine: a bundle is read once, front to back.
	zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBundle, err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	files := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBundle, err)
		}
		if _, dup := files[h.Name]; dup {
			return nil, fmt.Errorf("%w: %s appears twice", ErrBundle, h.Name)
		}
		b, err := readEntry(tr, h.Size)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrBundle, h.Name, err)
		}
		files[h.Name] = b
	}
	return files, nil
}

// readEntry reads a tar entry of the size its header states, up to maxFileBytes. The buffer is
// sized from the header up to maxPresize (the header is the bundle's word) and grows only past
// that: io.Copy into a bytes.Buffer doubled the full buffer once more to find the end, and
// clearing that copy was a fifth of verify-export's time on large bundles.
func readEntry(r io.Reader, size int64) ([]byte, error) {
	if size > maxFileBytes {
		return nil, fmt.Errorf("larger than %d bytes", int64(maxFileBytes))
	}
	buf := make([]byte, 0, min(size, maxPresize))
	for int64(len(buf)) < size {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, int(min(size-int64(len(buf)), int64(len(buf)))))
		}
		n, err := r.Read(buf[len(buf):min(int64(cap(buf)), size)])
		buf = buf[:len(buf)+n]
		if err == io.EOF && int64(len(buf)) < size {
			return nil, io.ErrUnexpectedEOF
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
	}
	return buf, nil
}

// sortedNames lists a map's keys in order (for stable reports).
func sortedNames(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

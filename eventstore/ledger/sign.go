package ledger

import (
	"fmt"
	"math/bits"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// SignedBatch is the outcome of signing envelopes together: one signature, one proof each.
type SignedBatch struct {
	Signature []byte
	Proofs    [][]byte // encoded SigProof per envelope
}

// SignEnvelopes signs envelopes as one batch (see the layout in encoding.go).
func SignEnvelopes(key *SigningKey, envelopes [][]byte) SignedBatch {
	leaves := make([][]byte, len(envelopes))
	for i, e := range envelopes {
		leaves[i] = rfc6962.DefaultHasher.HashLeaf(e)
	}
	paths := make([][][]byte, len(leaves))
	root := subtree(leaves, paths, 0, len(leaves))
	count := uint32(len(leaves))
	out := SignedBatch{Signature: key.Sign(SignedMessage(count, root)), Proofs: make([][]byte, len(leaves))}
	for i := range leaves {
		p := SigProof{Index: uint32(i), Count: count, Path: paths[i]}
		out.Proofs[i] = AppendSigProof(make([]byte, 0, 12+len(p.Path)*HashSize), &p)
	}
	return out
}

// subtree returns the RFC 6962 hash of leaves[lo:hi] and appends, for every leaf in the range,
// the sibling at this level to its path (so paths run from the leaf up to the root).
func subtree(leaves [][]byte, paths [][][]byte, lo, hi int) []byte {
	if hi-lo == 1 {
		return leaves[lo]
	}
	k := 1 << (bits.Len(uint(hi-lo-1)) - 1) // largest power of two below hi-lo
	left := subtree(leaves, paths, lo, lo+k)
	right := subtree(leaves, paths, lo+k, hi)
	for i := lo; i < lo+k; i++ {
		paths[i] = append(paths[i], right)
	}
	for i := lo + k; i < hi; i++ {
		paths[i] = append(paths[i], left)
	}
	return rfc6962.DefaultHasher.HashChildren(left, right)
}

// BatchRoot recomputes the root a record's signature covers from its envelope and proof.
func BatchRoot(envelope, encodedProof []byte) (root []byte, count uint32, err error) {
	p, err := DecodeSigProof(encodedProof)
	if err != nil {
		return nil, 0, err
	}
	root, err = proof.RootFromInclusionProof(rfc6962.DefaultHasher, uint64(p.Index), uint64(p.Count),
		rfc6962.DefaultHasher.HashLeaf(envelope), p.Path)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return root, p.Count, nil
}

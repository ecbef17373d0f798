package evidence

import (
	"fmt"
	"math/bits"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// tree holds every perfect subtree hash of a Merkle tree over leaf hashes (level 0 the leaves),
// enough to build any inclusion or consistency proof for a tree of at most that many leaves.
type tree struct {
	levels [][][]byte
}

func newTree(leaves [][]byte) *tree {
	t := &tree{levels: [][][]byte{leaves}}
	for cur := leaves; len(cur) > 1; {
		next := make([][]byte, len(cur)/2)
		for i := range next {
			next[i] = rfc6962.DefaultHasher.HashChildren(cur[2*i], cur[2*i+1])
		}
		t.levels = append(t.levels, next)
		cur = next
	}
	return t
}

func (t *tree) node(id compact.NodeID) ([]byte, error) {
	if int(id.Level) >= len(t.levels) || id.Index >= uint64(len(t.levels[id.Level])) {
		return nil, fmt.Errorf("merkle node %d/%d is not in the tree", id.Level, id.Index)
	}
	return t.levels[id.Level][id.Index], nil
}

func (t *tree) hashes(nodes proof.Nodes) ([][]byte, error) {
	hs := make([][]byte, len(nodes.IDs))
	for i, id := range nodes.IDs {
		h, err := t.node(id)
		if err != nil {
			return nil, err
		}
		hs[i] = h
	}
	return nodes.Rehash(hs, rfc6962.DefaultHasher.HashChildren)
}

// inclusion is the RFC 6962 inclusion proof of leaf index in the tree of size leaves.
func (t *tree) inclusion(index, size uint64) ([][]byte, error) {
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, err
	}
	return t.hashes(nodes)
}

// consistency is the RFC 6962 consistency proof from size1 to size2.
func (t *tree) consistency(size1, size2 uint64) ([][]byte, error) {
	nodes, err := proof.Consistency(size1, size2)
	if err != nil {
		return nil, err
	}
	return t.hashes(nodes)
}

// rootOf is the RFC 6962 root of leaf hashes.
func rootOf(leaves [][]byte) ([]byte, error) {
	rng := (&compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}).NewEmptyRange(0)
	for _, h := range leaves {
		if err := rng.Append(h, nil); err != nil {
			return nil, err
		}
	}
	return rng.GetRootHash(nil)
}

// prefix answers root and inclusion questions about the trees of every size up to its leaves,
// from one tree built once: the verifier compares each record's proof with the one proof RFC 6962
// gives for its position (two proofs that verify against one root differ only by a hash
// collision), where hashing each proof up to the root cost a third of verify-export's time.
type prefix struct {
	t *tree
	// ranges memoizes the hashes of ranges that are not perfect subtrees: the right borders of
	// the sizes asked, a few per size.
	ranges map[[2]uint64][]byte
}

func newPrefix(leaves [][]byte) *prefix {
	return &prefix{t: newTree(leaves), ranges: map[[2]uint64][]byte{}}
}

// split is the largest power of two below n (n ≥ 2): RFC 6962's k.
func split(n uint64) uint64 { return 1 << (bits.Len64(n-1) - 1) }

// rangeHash is the RFC 6962 hash of the leaves [begin, end), begin < end.
func (p *prefix) rangeHash(begin, end uint64) []byte {
	n := end - begin
	if n&(n-1) == 0 && begin%n == 0 {
		level := bits.TrailingZeros64(n)
		return p.t.levels[level][begin>>level]
	}
	key := [2]uint64{begin, end}
	if h, ok := p.ranges[key]; ok {
		return h
	}
	k := split(n)
	h := rfc6962.DefaultHasher.HashChildren(p.rangeHash(begin, begin+k), p.rangeHash(begin+k, end))
	p.ranges[key] = h
	return h
}

// root is the root of the tree of the first size leaves (size ≤ the leaves held).
func (p *prefix) root(size uint64) []byte {
	if size == 0 {
		return rfc6962.DefaultHasher.EmptyRoot()
	}
	return p.rangeHash(0, size)
}

// inclusion is the RFC 6962 audit path of leaf index in the tree of size leaves (index < size),
// leaf side first, as proof.VerifyInclusion reads it.
func (p *prefix) inclusion(index, size uint64) [][]byte {
	return p.path(index, 0, size, nil)
}

func (p *prefix) path(index, begin, end uint64, out [][]byte) [][]byte {
	if end-begin <= 1 {
		return out
	}
	k := split(end - begin)
	if index < begin+k {
		return append(p.path(index, begin, begin+k, out), p.rangeHash(begin+k, end))
	}
	return append(p.path(index, begin+k, end, out), p.rangeHash(begin, begin+k))
}

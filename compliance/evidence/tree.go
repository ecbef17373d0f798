package evidence

import (
	"fmt"

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

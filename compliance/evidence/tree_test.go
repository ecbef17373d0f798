package evidence

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"testing"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// The verifier's proofs and roots are RFC 6962's: the same as the merkle library's for every
// size up to 70 and every index, and they verify.
func TestPrefixProofsAreRFC6962s(t *testing.T) {
	var leaves [][]byte
	for i := range 70 {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(i))
		h := sha256.Sum256(b[:])
		leaves = append(leaves, h[:])
	}
	p := newPrefix(leaves)
	for size := uint64(1); size <= uint64(len(leaves)); size++ {
		want, err := rootOf(leaves[:size])
		if err != nil {
			t.Fatal(err)
		}
		if got := p.root(size); !bytes.Equal(got, want) {
			t.Fatalf("size %d: root %x, want %x", size, got, want)
		}
		for index := range size {
			got := p.inclusion(index, size)
			lib, err := p.t.inclusion(index, size)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(lib) {
				t.Fatalf("size %d index %d: %d hashes, the library %d", size, index, len(got), len(lib))
			}
			for i := range got {
				if !bytes.Equal(got[i], lib[i]) {
					t.Fatalf("size %d index %d: hash %d differs from the library's", size, index, i)
				}
			}
			if err := proof.VerifyInclusion(rfc6962.DefaultHasher, index, size, leaves[index], got, want); err != nil {
				t.Fatalf("size %d index %d: %v", size, index, err)
			}
		}
	}
}

package eventstore

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/transparency-dev/merkle/rfc6962"
)

// These tests run without PostgreSQL: they cover the checks Verify makes on what it read.

func TestVerifyBounds(t *testing.T) {
	t.Parallel()
	u := func(v uint64) *uint64 { return &v }
	tests := []struct {
		name       string
		headNext   int64
		from       uint64
		to         *uint64
		wantLast   uint64
		wantToHead bool
		wantErr    string // "" none
	}{
		{name: "empty log", headNext: 0, wantErr: ErrNotInitialized.Error()},
		{name: "to the head", headNext: 10, wantLast: 9, wantToHead: true},
		{name: "from the last record", headNext: 10, from: 9, wantLast: 9, wantToHead: true},
		{name: "to before the head", headNext: 10, to: u(4), wantLast: 4},
		{name: "to the last record is to the head", headNext: 10, to: u(9), wantLast: 9, wantToHead: true},
		{name: "to past the head is to the head", headNext: 10, to: u(99), wantLast: 9, wantToHead: true},
		{name: "from past the head", headNext: 10, from: 10, wantErr: "--from 10 is past the last position 9"},
		{name: "from past to", headNext: 10, from: 5, to: u(4), wantErr: "--from 5 is past the last position 4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			last, toHead, err := verifyBounds(tc.headNext, tc.from, tc.to)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || last != tc.wantLast || toHead != tc.wantToHead {
				t.Fatalf("verifyBounds = %d, %v, %v; want %d, %v", last, toHead, err, tc.wantLast, tc.wantToHead)
			}
		})
	}
	if _, _, err := verifyBounds(0, 0, nil); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("empty log: %v, want ErrNotInitialized", err)
	}
}

func TestCheckEnd(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		next, to uint64
		toHead   bool
		headNext int64
		want     FailureKind // "" none
	}{
		{name: "every record up to the head", next: 10, to: 9, toHead: true, headNext: 10},
		{name: "every record up to to", next: 5, to: 4, headNext: 10},
		{name: "records the head counts are gone", next: 7, to: 9, toHead: true, headNext: 10, want: FailTruncated},
		{name: "the log ends before to", next: 3, to: 4, headNext: 10, want: FailGap},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := checkEnd(tc.next, tc.to, tc.toHead, tc.headNext)
			switch {
			case tc.want == "" && f != nil:
				t.Fatalf("failure %v, want none", f)
			case tc.want != "" && (f == nil || f.Kind != tc.want || f.Position != tc.next):
				t.Fatalf("failure %v, want %s at %d", f, tc.want, tc.next)
			}
		})
	}
}

func TestCheckTail(t *testing.T) {
	t.Parallel()
	last := bytes.Repeat([]byte{1}, HashSize)
	other := bytes.Repeat([]byte{2}, HashSize)
	tests := []struct {
		name     string
		count    uint64
		headHash []byte
		tail     logTail
		want     FailureKind // "" none
		wantPos  uint64
	}{
		{name: "head and checkpoints agree", count: 10, headHash: last, tail: logTail{checkpointSize: 10}},
		{name: "no checkpoint", count: 10, headHash: last},
		{name: "the log grew while verifying", count: 10, headHash: last, tail: logTail{checkpointSize: 14, present: 4}},
		{name: "a checkpoint vouches for records that are gone", count: 10, headHash: last,
			tail: logTail{checkpointSize: 14, present: 3}, want: FailTruncated, wantPos: 10},
		{name: "the head hash is not the last record's", count: 10, headHash: other, tail: logTail{checkpointSize: 10},
			want: FailHeadMismatch, wantPos: 9},
		{name: "truncation is reported before the head", count: 10, headHash: other,
			tail: logTail{checkpointSize: 12}, want: FailTruncated, wantPos: 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := checkTail(tc.count, last, tc.headHash, tc.tail)
			switch {
			case tc.want == "" && f != nil:
				t.Fatalf("failure %v, want none", f)
			case tc.want != "" && (f == nil || f.Kind != tc.want || f.Position != tc.wantPos):
				t.Fatalf("failure %v, want %s at %d", f, tc.want, tc.wantPos)
			}
		})
	}
}

func TestCheckStart(t *testing.T) {
	t.Parallel()
	logKey, stranger := testKey(t, 1), testKey(t, 3)
	ring := testRing(t, logKey, testKey(t, 2))
	const size = 5
	rng := RangeFactory.NewEmptyRange(0)
	for i := range size {
		if err := rng.Append(rfc6962.DefaultHasher.HashLeaf([]byte{byte(i)}), nil); err != nil {
			t.Fatal(err)
		}
	}
	root, err := rng.GetRootHash(nil)
	if err != nil {
		t.Fatal(err)
	}
	frontier := encodeFrontier(rng.Hashes())
	note := func(key *SigningKey, size uint64, root []byte) string {
		n, err := SignCheckpoint(key, ring.Origin(), size, root)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	otherRoot := bytes.Repeat([]byte{9}, HashSize)

	tests := []struct {
		name    string
		cp      verifyCheckpoint
		want    FailureKind // "" none
		wantErr string      // "" none
	}{
		{name: "signed by the log key over its frontier", cp: verifyCheckpoint{size: size, frontier: frontier, note: note(logKey, size, root)}},
		{name: "signed by another key", cp: verifyCheckpoint{size: size, frontier: frontier, note: note(stranger, size, root)},
			want: FailCheckpointSignature},
		{name: "the frontier does not hash to the signed root", cp: verifyCheckpoint{size: size, frontier: frontier, note: note(logKey, size, otherRoot)},
			want: FailCheckpointMismatch},
		{name: "the note is for another size", cp: verifyCheckpoint{size: size, frontier: frontier, note: note(logKey, size+1, root)},
			want: FailCheckpointMismatch},
		{name: "the frontier is not whole hashes", cp: verifyCheckpoint{size: size, frontier: frontier[1:], note: note(logKey, size, root)},
			wantErr: "checkpoint 5 frontier"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, f, err := checkStart(&tc.cp, ring)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q…", err, tc.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case tc.want == "":
				if f != nil {
					t.Fatalf("failure %v, want none", f)
				}
				if r, _ := got.GetRootHash(nil); got.End() != size || !bytes.Equal(r, root) {
					t.Fatalf("the start frontier is at %d with root %x, want %d, %x", got.End(), r, size, root)
				}
			case f == nil || f.Kind != tc.want || f.Position != size-1:
				t.Fatalf("failure %v, want %s at %d", f, tc.want, size-1)
			}
		})
	}
}

package node

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

// The registry holds at most its bound and refuses beyond it; calls that ended leave nothing
// behind (the list is back to its root alone), and removing twice is harmless.
func TestLiveCallsBoundedAndForgetting(t *testing.T) {
	r := newLiveCalls(2, func() {})
	defer r.stop()
	a, b, c := &liveCall{}, &liveCall{}, &liveCall{}
	if ok, _ := r.add(a, 0); !ok {
		t.Fatal("first call refused")
	}
	if ok, _ := r.add(b, 0); !ok {
		t.Fatal("second call refused")
	}
	if ok, _ := r.add(c, 0); ok || r.len() != 2 {
		t.Fatalf("a third call past the bound of 2 was held (%d held)", r.len())
	}
	r.remove(a)
	r.remove(a)
	if ok, _ := r.add(c, 0); !ok {
		t.Fatal("a call refused once another ended")
	}
	if got := r.list(nil); len(got) != 2 || !(got[0] == b && got[1] == c || got[0] == c && got[1] == b) {
		t.Fatalf("held %v, want b and c", got)
	}
	r.remove(b)
	r.remove(c)
	r.remove(nil)
	if r.len() != 0 || c.next != nil || c.prev != nil {
		t.Fatal("the registry keeps something of calls that ended")
	}
	for i := range r.shards {
		if root := &r.shards[i].root; root.next != root || root.prev != root {
			t.Fatalf("shard %d keeps something of calls that ended", i)
		}
	}
}

// A call registered after a re-decision began (the epoch moved) is told to be decided again.
func TestLiveCallsStaleEpoch(t *testing.T) {
	r := newLiveCalls(8, func() {})
	defer r.stop()
	ep := r.epoch.Load()
	if _, stale := r.add(&liveCall{}, ep); stale {
		t.Fatal("stale without a re-decision")
	}
	r.epoch.Add(1)
	if _, stale := r.add(&liveCall{}, ep); !stale {
		t.Fatal("not stale after a re-decision began")
	}
}

// The timer fires at the earliest deadline of the calls held, an earlier call moves it forward,
// and after stop it is not set again.
func TestLiveCallsDeadlineTimer(t *testing.T) {
	fired := make(chan time.Time, 4)
	r := newLiveCalls(8, func() { fired <- time.Now() })
	start := time.Now()
	r.add(&liveCall{deadline: start.Add(time.Hour)}, 0)
	r.add(&liveCall{deadline: start.Add(50 * time.Millisecond)}, 0)
	select {
	case at := <-fired:
		if at.Before(start.Add(50 * time.Millisecond)) {
			t.Fatalf("fired %v after start, before the deadline", at.Sub(start))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the timer did not fire at the earliest deadline")
	}
	r.stop()
	r.stop()
	r.add(&liveCall{deadline: time.Now().Add(time.Millisecond)}, 0)
	r.tmu.Lock()
	at := r.at
	r.tmu.Unlock()
	if !at.Equal(start.Add(50 * time.Millisecond)) {
		t.Fatalf("a stopped registry set its timer again (to %v)", at)
	}
}

// frame is a server's WebSocket frame (unmasked unless mask).
func frame(op byte, payload []byte, mask bool) []byte {
	b := []byte{0x80 | op}
	m := byte(0)
	if mask {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, m|byte(n))
	case n < 1<<16:
		b = append(b, m|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if mask {
		b = append(b, 1, 2, 3, 4)
	}
	return append(b, payload...)
}

// The frame follower finds every frame's end however the bytes are split, and notices a close.
func TestWSFramesBoundaries(t *testing.T) {
	frames := [][]byte{
		frame(1, []byte("tick 1"), false),
		frame(2, bytes.Repeat([]byte{7}, 300), false),
		frame(2, bytes.Repeat([]byte{9}, 70000), false),
		frame(1, nil, false),
		frame(1, []byte("masked"), true),
	}
	for _, split := range []int{1, 2, 3, 7, 1000, 1 << 20} {
		var f wsFrames
		for i, fr := range frames {
			for off := 0; off < len(fr); off += split {
				f.feed(fr[off:min(off+split, len(fr))])
				if end := off+split >= len(fr); f.atBoundary() != end {
					t.Fatalf("split %d, frame %d at %d of %d: at boundary %v", split, i, off, len(fr), f.atBoundary())
				}
			}
		}
		if f.closed {
			t.Fatalf("split %d: a close seen where none was sent", split)
		}
		f.feed(frame(8, []byte{0x03, 0xe8}, false))
		if !f.closed || !f.atBoundary() {
			t.Fatalf("split %d: the close frame was not noticed", split)
		}
	}
	var f wsFrames
	f.feed(wsClosePolicy)
	if !f.closed || !f.atBoundary() || binary.BigEndian.Uint16(wsClosePolicy[2:4]) != 1008 {
		t.Fatal("the node's own close frame is not a whole close with status 1008")
	}
}

// BenchmarkLiveCallsAddRemove is what the registry adds to every call: one allocation, a
// registration and a removal, from many goroutines at once.
func BenchmarkLiveCallsAddRemove(b *testing.B) {
	r := newLiveCalls(maxLiveCalls, func() {})
	defer r.stop()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			lc := &liveCall{route: Route{TunnelID: "t"}}
			if ok, _ := r.add(lc, r.epoch.Load()); !ok {
				b.Fatal("registry full")
			}
			r.remove(lc)
		}
	})
}

package eventstore

import (
	"maps"
	"time"
)

// The appender's commit path is three steps: beginBatch reads the head and the versions of the
// batch's streams under the head lock, planBatch decides (pure: no I/O, no clock, no signing),
// writeBatch writes what was decided and commits, recovering a lost acknowledgement.

// batchPlan is what planBatch decided for one batch.
type batchPlan struct {
	accepted []*appendRequest  // in batch order
	results  [][]AppendResult  // results[i] answers accepted[i]
	rejected []rejectedRequest // in batch order; nothing of them is written
	rows     *batchBuilder     // the accepted events as rows chained onto the head
}

// rejectedRequest is a request that failed its checks, and why.
type rejectedRequest struct {
	req *appendRequest
	err error // a *WrongExpectedVersionError, or one wrapping ErrBadSignature
}

// batchStreams lists, in order of first appearance, the streams whose current version planBatch
// needs: every stream a request appends to, and "$log" when a request is presigned (its version
// tells whether the key history moved since the cached key ring was loaded).
func batchStreams(reqs []*appendRequest) []string {
	ids := make([]string, 0, len(reqs))
	seen := make(map[string]struct{}, len(reqs))
	add := func(id string) {
		if _, ok := seen[id]; !ok {
			seen[id] = struct{}{}
			ids = append(ids, id)
		}
	}
	presigned := false
	for _, r := range reqs {
		if r.presigned {
			presigned = true
			for i := range r.events {
				add(r.events[i].env.StreamID)
			}
			continue
		}
		for _, g := range r.groups {
			add(g.stream)
		}
	}
	if presigned {
		add(LogStream)
	}
	return ids
}

// planBatch decides, in batch order, which requests are written and at which positions and
// stream versions, given the head and each stream's current version (a stream missing from
// versions is at 0). A request whose expected version does not match the version the stream
// has by then (after the requests accepted before it in this batch) is rejected, as is a
// presigned request whose keys are not in force at the positions it would get (ring is the key
// history under the head lock; it must be set when a request is presigned). A rejected request
// takes no position. Events are chained as they come; their envelopes must be signed already,
// because the leaf that is hashed includes the signature and its proof. Duplicate event ids are
// left to the database, which alone knows the ids already stored (commit then retries each
// request alone so that only the culprit fails). versions is not modified.
func planBatch(reqs []*appendRequest, versions map[string]uint64, h head, now time.Time, ring *KeyRing) batchPlan {
	cur := make(map[string]uint64, len(versions))
	maps.Copy(cur, versions)
	b := newBatchBuilder(h, now)
	p := batchPlan{rows: b}
	for _, r := range reqs {
		if r.presigned {
			if err := checkPresignedKeys(ring, r.events, b.next); err != nil {
				p.rejected = append(p.rejected, rejectedRequest{req: r, err: err})
				continue
			}
			firstPos := b.next
			var v uint64
			for i := range r.events {
				id := r.events[i].env.StreamID
				cur[id]++
				v = cur[id]
				b.add(&r.events[i], v)
			}
			p.accepted = append(p.accepted, r)
			p.results = append(p.results, []AppendResult{{StreamVersion: v, FirstPosition: firstPos, LastPosition: b.next - 1, RecordedAt: now}})
			continue
		}
		if err := checkExpected(r.groups, cur); err != nil {
			p.rejected = append(p.rejected, rejectedRequest{req: r, err: err})
			continue
		}
		res := make([]AppendResult, 0, len(r.groups))
		i := 0
		for _, g := range r.groups {
			v := cur[g.stream]
			firstPos := b.next
			for range g.n {
				v++
				b.add(&r.events[i], v)
				i++
			}
			cur[g.stream] = v
			res = append(res, AppendResult{StreamVersion: v, FirstPosition: firstPos, LastPosition: b.next - 1, RecordedAt: now})
		}
		p.accepted = append(p.accepted, r)
		p.results = append(p.results, res)
	}
	return p
}

// checkExpected reports the first group whose stream is not at the version it expects.
func checkExpected(groups []streamGroup, versions map[string]uint64) error {
	for _, g := range groups {
		if cur := versions[g.stream]; !g.expected.Matches(cur) {
			return &WrongExpectedVersionError{StreamID: g.stream, Expected: g.expected, Actual: cur}
		}
	}
	return nil
}

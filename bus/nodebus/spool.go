package nodebus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"

	"github.com/tunnelplane/tunnelplane/bus/wire"
)

// Spool layout. The spool is a directory of append-only segment files holding batches that NATS
// has not acknowledged yet, oldest first:
//
//	<dir>/<seq>.seg      seq = 20-digit decimal sequence number of the segment's first record
//	segment = record*
//	record  = u32 len ‖ u32 CRC-32C(payload) ‖ payload      (big-endian, len ≥ 1)
//	payload = one node-facts batch message (batch.go)
//
// Every append is fsync'd before Publish returns, and the directory is fsync'd when a segment is
// created, so an acknowledged batch survives a crash. A crash during an append leaves a torn
// record at the end of the newest segment (short, or with a CRC that does not match); opening the
// spool detects it, truncates the file before it and logs what was dropped (that batch was never
// acknowledged). A segment is deleted once all its records are acknowledged by NATS. Records of a
// partly sent segment are sent again after a restart; JetStream's duplicate window and the event
// store's unique event ids absorb those repeats.

var segmentName = regexp.MustCompile(`^([0-9]{20})\.seg$`)

const (
	recordHeader      = 8
	maxRecordBytes    = 64 << 20
	defaultSegmentMax = 8 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

type segment struct {
	seq     uint64 // sequence number of its first record
	path    string
	f       *os.File
	size    int64
	records int // records in the file
	sent    int // records acknowledged
}

type recordRef struct {
	seg *segment
	off int64
	n   int
}

// spool is not safe for concurrent use; Publisher serialises access.
type spool struct {
	dir        string
	maxBytes   int64
	segmentMax int64
	log        *slog.Logger

	segs    []*segment // oldest first; the last one takes appends
	queue   []recordRef
	head    int // index in queue of the oldest unsent record
	bytes   int64
	nextSeq uint64
}

// openSpool opens (creating if needed) the spool in dir and recovers its records, dropping a torn
// tail.
func openSpool(dir string, maxBytes, segmentMax int64, log *slog.Logger) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	s := &spool{dir: dir, maxBytes: maxBytes, segmentMax: segmentMax, log: log, nextSeq: 1}
	var seqs []uint64
	for _, e := range entries {
		m := segmentName.FindStringSubmatch(e.Name())
		if m == nil || !e.Type().IsRegular() {
			continue
		}
		seq, err := strconv.ParseUint(m[1], 10, 64)
		if err != nil {
			continue
		}
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	for _, seq := range seqs {
		seg, err := s.recoverSegment(seq)
		if err != nil {
			s.close()
			return nil, err
		}
		if seg == nil {
			continue
		}
		s.segs = append(s.segs, seg)
		s.bytes += seg.size
		s.nextSeq = max(s.nextSeq, seg.seq+uint64(seg.records))
	}
	return s, nil
}

// recoverSegment scans one segment, truncating it at the first record that is torn or damaged.
// An empty segment is removed and nil returned.
func (s *spool) recoverSegment(seq uint64) (*segment, error) {
	path := filepath.Join(s.dir, fmt.Sprintf("%020d.seg", seq))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open spool segment: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open spool segment: %w", err)
	}
	seg := &segment{seq: seq, path: path, f: f}
	size := st.Size()
	var off int64
	var hdr [recordHeader]byte
	var refs []recordRef
	for off < size {
		n, ok := validRecordAt(f, off, size, hdr[:])
		if !ok {
			s.log.Warn("spool: dropping a torn or damaged record and everything after it in its segment",
				"segment", path, "offset", off, "dropped_bytes", size-off)
			if err := f.Truncate(off); err != nil {
				f.Close()
				return nil, fmt.Errorf("truncate torn spool record: %w", err)
			}
			if err := f.Sync(); err != nil {
				f.Close()
				return nil, fmt.Errorf("truncate torn spool record: %w", err)
			}
			size = off
			break
		}
		refs = append(refs, recordRef{seg: seg, off: off, n: n})
		off += recordHeader + int64(n)
	}
	if len(refs) == 0 {
		f.Close()
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove empty spool segment: %w", err)
		}
		return nil, nil
	}
	seg.size = size
	seg.records = len(refs)
	s.queue = append(s.queue, refs...)
	return seg, nil
}

// validRecordAt reports the payload length of the record at off when it is complete and its CRC
// matches.
func validRecordAt(f *os.File, off, size int64, hdr []byte) (int, bool) {
	if size-off < recordHeader {
		return 0, false
	}
	if _, err := f.ReadAt(hdr, off); err != nil {
		return 0, false
	}
	n := int64(binary.BigEndian.Uint32(hdr[0:4]))
	if n == 0 || n > maxRecordBytes || n > size-off-recordHeader {
		return 0, false
	}
	payload := make([]byte, n)
	if _, err := f.ReadAt(payload, off+recordHeader); err != nil {
		return 0, false
	}
	if crc32.Checksum(payload, crcTable) != binary.BigEndian.Uint32(hdr[4:8]) {
		return 0, false
	}
	return int(n), true
}

// Len is the number of records not yet acknowledged.
func (s *spool) Len() int { return len(s.queue) - s.head }

// Bytes is the spool's size on disk.
func (s *spool) Bytes() int64 { return s.bytes }

// Append writes payload as a new record and fsyncs it.
func (s *spool) Append(payload []byte) error {
	if len(payload) == 0 || len(payload) > maxRecordBytes {
		return fmt.Errorf("spool append: %w: record of %d bytes", ErrTooLarge, len(payload))
	}
	need := int64(recordHeader + len(payload))
	if s.bytes+need > s.maxBytes {
		return fmt.Errorf("spool append: %w: %d bytes spooled, limit %d", ErrSpoolFull, s.bytes, s.maxBytes)
	}
	seg := s.active()
	if seg == nil || seg.size >= s.segmentMax {
		var err error
		if seg, err = s.newSegment(); err != nil {
			return err
		}
	}
	buf := make([]byte, recordHeader, need)
	binary.BigEndian.PutUint32(buf[0:4], uint32(len(payload)))
	binary.BigEndian.PutUint32(buf[4:8], crc32.Checksum(payload, crcTable))
	buf = append(buf, payload...)
	if _, err := seg.f.WriteAt(buf, seg.size); err != nil {
		_ = seg.f.Truncate(seg.size) // leave no half record behind a later append
		return fmt.Errorf("spool append: %w", err)
	}
	if err := seg.f.Sync(); err != nil {
		_ = seg.f.Truncate(seg.size)
		return fmt.Errorf("spool append: fsync: %w", err)
	}
	s.queue = append(s.queue, recordRef{seg: seg, off: seg.size, n: len(payload)})
	seg.size += need
	seg.records++
	s.bytes += need
	s.nextSeq++
	return nil
}

func (s *spool) active() *segment {
	if len(s.segs) == 0 {
		return nil
	}
	return s.segs[len(s.segs)-1]
}

func (s *spool) newSegment() (*segment, error) {
	path := filepath.Join(s.dir, fmt.Sprintf("%020d.seg", s.nextSeq))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: new segment: %w", err)
	}
	// The directory entry must be durable too, or a crash could lose a whole fsync'd segment.
	if err := syncDir(s.dir); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("spool: new segment: %w", err)
	}
	seg := &segment{seq: s.nextSeq, path: path, f: f}
	s.segs = append(s.segs, seg)
	return seg, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Peek returns the oldest unsent record, or ok=false when there is none. A record that no longer
// reads back intact returns an error wrapping wire.ErrMalformed; the caller drops it with Ack.
func (s *spool) Peek() (payload []byte, ok bool, err error) {
	if s.Len() == 0 {
		return nil, false, nil
	}
	ref := s.queue[s.head]
	buf := make([]byte, recordHeader+ref.n)
	if _, err := ref.seg.f.ReadAt(buf, ref.off); err != nil && !errors.Is(err, io.EOF) {
		return nil, true, fmt.Errorf("spool read: %w", err)
	}
	payload = buf[recordHeader:]
	if int(binary.BigEndian.Uint32(buf[0:4])) != ref.n || crc32.Checksum(payload, crcTable) != binary.BigEndian.Uint32(buf[4:8]) {
		return nil, true, fmt.Errorf("spool read: %w: record at %s:%d changed on disk", wire.ErrMalformed, ref.seg.path, ref.off)
	}
	return payload, true, nil
}

// Ack marks the oldest unsent record as sent and deletes its segment once fully sent.
func (s *spool) Ack() error {
	if s.Len() == 0 {
		return nil
	}
	ref := s.queue[s.head]
	s.queue[s.head] = recordRef{}
	s.head++
	if s.head == len(s.queue) || s.head > 1024 && s.head*2 > len(s.queue) {
		s.queue = append(s.queue[:0:0], s.queue[s.head:]...)
		s.head = 0
	}
	seg := ref.seg
	seg.sent++
	if seg.sent < seg.records {
		return nil
	}
	seg.f.Close()
	s.segs = slices.DeleteFunc(s.segs, func(x *segment) bool { return x == seg })
	s.bytes -= seg.size
	if err := os.Remove(seg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("spool: remove sent segment: %w", err)
	}
	return nil
}

func (s *spool) close() {
	for _, seg := range s.segs {
		seg.f.Close()
	}
	s.segs = nil
}

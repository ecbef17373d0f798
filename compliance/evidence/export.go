package evidence

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

// ErrWindow reports a window that is not in the log.
var ErrWindow = errors.New("export window")

// Appender appends the export.created record (an *eventstore.Store).
type Appender interface {
	Append(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, events ...eventstore.EventData) (eventstore.AppendResult, error)
}

// ExportConfig is what an export needs of the control plane.
type ExportConfig struct {
	Pool *pgxpool.Pool
	Log  Appender
	// Key is the log key in force: it signs the manifest.
	Key *eventstore.SigningKey
	// Actor is who asked (the export.created record's metadata actor); RequestID and
	// CorrelationID, when set, tie the record to the request that asked (the API's).
	Actor                    string
	RequestID, CorrelationID string
	// ExportID, when set, is the export's id (the manifest's and the record's); default a new one.
	ExportID string
	// Progress, when set, is told how many of the log's records were read, of how many (an export
	// reads the whole log: the bundle carries every leaf hash).
	Progress func(done, total uint64)
	Now      func() time.Time
	// Personal, when set, opens the window's sealed personal data into FilePersonal.
	Personal PersonalOpener
}

// Window selects the records to export: positions, or times (the records recorded in
// [FromTime, ToTime]) when set.
type Window struct {
	From, To         uint64
	FromTime, ToTime *time.Time
	// OrgID scopes the bundle to an organization: its records (payload or metadata org_id) in
	// full, the window's others withheld (only their leaf hashes travel).
	OrgID string
}

// belongsTo reports whether a record is the organization's: its payload or its metadata names it.
func belongsTo(rec *ledger.Record, orgID string) bool {
	var v struct {
		OrgID string `json:"org_id"`
	}
	if json.Unmarshal(rec.StoredPayload, &v) == nil && v.OrgID == orgID {
		return true
	}
	v.OrgID = ""
	return json.Unmarshal(rec.Metadata, &v) == nil && v.OrgID == orgID
}

// ExportResult says what was written and where it was recorded.
type ExportResult struct {
	Manifest     Manifest
	BundleSHA256 string
	Bytes        int64
	// Position is the position of the export.created record.
	Position uint64
}

// Export writes the bundle of the window to out (through a temporary file in its directory,
// renamed when complete) and appends export.created.
func Export(ctx context.Context, cfg ExportConfig, w Window, out string) (ExportResult, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	b, err := build(ctx, cfg, w)
	if err != nil {
		return ExportResult{}, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), ".bundle-*")
	if err != nil {
		return ExportResult{}, fmt.Errorf("export: %w", err)
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	cw := &countingWriter{w: io.MultiWriter(tmp, h)}
	if err := WriteBundle(cw, b.files, b.at); err != nil {
		tmp.Close()
		return ExportResult{}, fmt.Errorf("export: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return ExportResult{}, fmt.Errorf("export: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return ExportResult{}, fmt.Errorf("export: %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return ExportResult{}, fmt.Errorf("export: %w", err)
	}
	res := ExportResult{Manifest: b.manifest, BundleSHA256: hex.EncodeToString(h.Sum(nil)), Bytes: cw.n}
	ev := domain.ExportCreated{ExportID: b.manifest.ExportID, OrgID: b.manifest.OrgID, From: b.manifest.From, To: b.manifest.To,
		Records: b.manifest.Records, CheckpointSize: b.manifest.NewestCheckpoint, BundleSHA256: res.BundleSHA256}
	payload, err := json.Marshal(ev)
	if err != nil {
		return res, fmt.Errorf("export: %w", err)
	}
	correlation := cfg.CorrelationID
	if correlation == "" {
		correlation = uuid.Must(uuid.NewV7()).String()
	}
	meta, err := json.Marshal(domain.Metadata{Actor: cfg.Actor, OrgID: b.manifest.OrgID, Command: "Export", CorrelationID: correlation,
		RequestID: cfg.RequestID, OccurredAt: cfg.Now().UTC()})
	if err != nil {
		return res, fmt.Errorf("export: %w", err)
	}
	ar, err := cfg.Log.Append(ctx, domain.ExportStream(b.manifest.ExportID), eventstore.NoStream,
		eventstore.EventData{Type: domain.TypeExportCreated, Payload: payload, Metadata: meta})
	if err != nil {
		return res, fmt.Errorf("export: record the export: %w", err)
	}
	res.Position = ar.LastPosition
	return res, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type built struct {
	files    map[string][]byte
	manifest Manifest
	at       time.Time
}

// build reads the log up to its newest checkpoint and assembles the bundle's files.
func build(ctx context.Context, cfg ExportConfig, w Window) (*built, error) {
	var next int64
	var origin string
	if err := cfg.Pool.QueryRow(ctx, `SELECT next_position, origin FROM log_head`).Scan(&next, &origin); err != nil {
		return nil, fmt.Errorf("export: read head: %w", err)
	}
	size := uint64(next)
	if size == 0 {
		return nil, fmt.Errorf("export: %w: the log is empty", ErrWindow)
	}
	if w.OrgID != "" && !domain.ValidID(w.OrgID) {
		return nil, fmt.Errorf("export: %w: organization %q is not an id", ErrWindow, w.OrgID)
	}
	if err := resolveTimes(ctx, cfg.Pool, &w); err != nil {
		return nil, err
	}
	if w.From > w.To || w.To >= size {
		return nil, fmt.Errorf("export: %w: positions %d..%d, the log holds 0..%d", ErrWindow, w.From, w.To, size-1)
	}
	newest, err := noteAt(ctx, cfg.Pool, `SELECT size, note FROM checkpoints WHERE size = $1`, size)
	if err != nil {
		return nil, err
	}
	window, err := noteAt(ctx, cfg.Pool, `SELECT size, note FROM checkpoints WHERE size > $1 ORDER BY size LIMIT 1`, w.To)
	if err != nil {
		return nil, err
	}
	leaves := make([][]byte, 0, size)
	var records, keyHistory []Entry
	var withheld []PositionRange
	var personal []PersonalValue
	ring := ledger.NewKeyRing()
	err = readRecords(ctx, cfg.Pool, size, func(pos uint64, rec *ledger.Record, leaf []byte) error {
		leaves = append(leaves, rfc6962.DefaultHasher.HashLeaf(leaf))
		if cfg.Progress != nil && ((pos+1)%4096 == 0 || pos+1 == size) {
			cfg.Progress(pos+1, size)
		}
		inWindow := pos >= w.From && pos <= w.To
		if rec.StreamID == ledger.LogStream {
			next, err := ring.Apply(pos, rec.Type, rec.StoredPayload)
			if err != nil {
				return fmt.Errorf("export: the key history does not verify at position %d (run verify): %w", pos, err)
			}
			ring = next
		}
		e := Entry{Leaf: leaf, PrevHash: rec.PrevHash, Hash: rec.Hash}
		switch {
		case inWindow && w.OrgID != "" && rec.StreamID != ledger.LogStream && !belongsTo(rec, w.OrgID):
			// Another tenant's record: only its leaf hash travels. (Key records are the log's own
			// and always travel in full: every signature depends on them.)
			if n := len(withheld); n > 0 && withheld[n-1].To+1 == pos {
				withheld[n-1].To = pos
			} else {
				withheld = append(withheld, PositionRange{From: pos, To: pos})
			}
		case inWindow:
			records = append(records, e)
			if cfg.Personal != nil {
				var err error
				if personal, err = openPersonal(ctx, cfg.Personal, pos, rec, personal); err != nil {
					return err
				}
			}
		case rec.StreamID == ledger.LogStream:
			keyHistory = append(keyHistory, e)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if ring.LogKeyID() != cfg.Key.ID() {
		return nil, fmt.Errorf("export: %w: the log key in force is %s, the key given is %s", eventstore.ErrKeyMismatch, ring.LogKeyID(), cfg.Key.ID())
	}
	t := newTree(leaves)
	for _, cp := range []*ledger.SignedCheckpoint{&window, &newest} {
		root, err := rootOf(leaves[:cp.Size])
		if err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		if !bytes.Equal(root, cp.Root) {
			return nil, fmt.Errorf("export: the records do not hash to checkpoint %d (run verify)", cp.Size)
		}
	}
	for i := range records {
		pos := binary.BigEndian.Uint64(records[i].Leaf[4:12])
		if records[i].Proof, err = t.inclusion(pos, window.Size); err != nil {
			return nil, fmt.Errorf("export: inclusion proof: %w", err)
		}
	}
	for i := range keyHistory {
		pos := binary.BigEndian.Uint64(keyHistory[i].Leaf[4:12])
		if keyHistory[i].Proof, err = t.inclusion(pos, newest.Size); err != nil {
			return nil, fmt.Errorf("export: inclusion proof: %w", err)
		}
	}
	var consistency []byte
	if window.Size < newest.Size {
		p, err := t.consistency(window.Size, newest.Size)
		if err != nil {
			return nil, fmt.Errorf("export: consistency proof: %w", err)
		}
		consistency = bytes.Join(p, nil)
	}
	files := map[string][]byte{
		FileRecords:          encodeEntries(records),
		FileKeyHistory:       encodeEntries(keyHistory),
		FileLeaves:           bytes.Join(leaves, nil),
		FileWindowCheckpoint: []byte(window.Note),
		FileNewestCheckpoint: []byte(newest.Note),
		FileConsistency:      consistency,
	}
	at := cfg.Now().UTC()
	if cfg.ExportID == "" {
		cfg.ExportID = uuid.Must(uuid.NewV7()).String()
	}
	m := Manifest{Format: Format, Origin: origin, ExportID: cfg.ExportID, OrgID: w.OrgID, Withheld: withheld, From: w.From, To: w.To,
		WindowCheckpoint: window.Size, NewestCheckpoint: newest.Size, Records: uint64(len(records)), KeyRecords: uint64(len(keyHistory)),
		CreatedAt: at.Format(time.RFC3339Nano), CreatedBy: cfg.Actor, LogKeyID: cfg.Key.ID(), Files: map[string]string{}}
	for _, name := range hashedFiles {
		m.Files[name] = sha256Hex(files[name])
	}
	if cfg.Personal != nil {
		if personal == nil {
			personal = []PersonalValue{}
		}
		b, err := json.MarshalIndent(personal, "", " ")
		if err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		files[FilePersonal] = append(b, '\n')
		m.Files[FilePersonal] = sha256Hex(files[FilePersonal])
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	files[FileManifest] = append(mb, '\n')
	sig, err := json.Marshal(ManifestSignature{KeyID: cfg.Key.ID(), Signature: cfg.Key.Sign(ManifestMessage(files[FileManifest]))})
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	files[FileManifestSig] = sig
	return &built{files: files, manifest: m, at: at}, nil
}

func encodeEntries(es []Entry) []byte {
	n := 0
	for i := range es {
		n += 4 + len(es[i].Leaf) + 2*ledger.HashSize + 4 + len(es[i].Proof)*ledger.HashSize
	}
	out := make([]byte, 0, n)
	for i := range es {
		out = appendEntry(out, &es[i])
	}
	return out
}

// resolveTimes turns a window given as times into positions: the first record recorded at or
// after FromTime, the last recorded at or before ToTime.
func resolveTimes(ctx context.Context, pool *pgxpool.Pool, w *Window) error {
	if w.FromTime != nil {
		var p *int64
		if err := pool.QueryRow(ctx, `SELECT min(global_position) FROM events WHERE recorded_at >= $1`, *w.FromTime).Scan(&p); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		if p == nil {
			return fmt.Errorf("export: %w: nothing was recorded at or after %s", ErrWindow, w.FromTime.Format(time.RFC3339))
		}
		w.From = uint64(*p)
	}
	if w.ToTime != nil {
		var p *int64
		if err := pool.QueryRow(ctx, `SELECT max(global_position) FROM events WHERE recorded_at <= $1`, *w.ToTime).Scan(&p); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		if p == nil {
			return fmt.Errorf("export: %w: nothing was recorded at or before %s", ErrWindow, w.ToTime.Format(time.RFC3339))
		}
		w.To = uint64(*p)
	}
	return nil
}

func noteAt(ctx context.Context, pool *pgxpool.Pool, query string, arg uint64) (ledger.SignedCheckpoint, error) {
	var size int64
	var note string
	if err := pool.QueryRow(ctx, query, int64(arg)).Scan(&size, &note); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return ledger.SignedCheckpoint{}, fmt.Errorf("export: no checkpoint covers position %d (run verify)", arg)
		}
		return ledger.SignedCheckpoint{}, fmt.Errorf("export: read checkpoint: %w", err)
	}
	cp, err := eventstore.ParseCheckpoint(note)
	if err != nil {
		return cp, fmt.Errorf("export: checkpoint %d: %w", size, err)
	}
	if cp.Size != uint64(size) {
		return cp, fmt.Errorf("export: checkpoint stored as %d says size %d (run verify)", size, cp.Size)
	}
	return cp, nil
}

// readRecords calls f with every record in [0, size), in order, with its canonical leaf.
func readRecords(ctx context.Context, pool *pgxpool.Pool, size uint64, f func(pos uint64, rec *ledger.Record, leaf []byte) error) error {
	const page = 4096
	for pos := uint64(0); pos < size; {
		rows, err := pool.Query(ctx, `SELECT global_position, stream_id, stream_version, event_id, type, schema_version,
			recorded_at, payload, metadata, key_id, signature, signature_proof, prev_hash, hash
			FROM events WHERE global_position >= $1 AND global_position < $2 ORDER BY global_position LIMIT $3`,
			int64(pos), int64(size), page)
		if err != nil {
			return fmt.Errorf("export: read records: %w", err)
		}
		n := 0
		for rows.Next() {
			var r ledger.Record
			var p, v int64
			var sv int32
			if err := rows.Scan(&p, &r.StreamID, &v, &r.EventID, &r.Type, &sv, &r.RecordedAt, &r.StoredPayload, &r.Metadata,
				&r.KeyID, &r.Signature, &r.SignatureProof, &r.PrevHash, &r.Hash); err != nil {
				rows.Close()
				return fmt.Errorf("export: read records: %w", err)
			}
			if uint64(p) != pos {
				rows.Close()
				return fmt.Errorf("export: position %d is missing (run verify)", pos)
			}
			r.Position, r.StreamVersion, r.StoredSchemaVersion = pos, uint64(v), uint32(sv)
			_, leaf := ledger.RecordLeaf(pos, r.StreamVersion, r.RecordedAt, &ledger.Envelope{EventID: r.EventID, StreamID: r.StreamID,
				Type: r.Type, SchemaVersion: r.StoredSchemaVersion, KeyID: r.KeyID, Payload: r.StoredPayload, Metadata: r.Metadata}, r.Signature, r.SignatureProof)
			if err := f(pos, &r, leaf); err != nil {
				rows.Close()
				return err
			}
			pos++
			n++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("export: read records: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("export: position %d is missing (run verify)", pos)
		}
	}
	return nil
}

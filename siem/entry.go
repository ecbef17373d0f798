package siem

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	jsonv1 "github.com/go-json-experiment/json/v1"
	"github.com/tunnelplane/tunnelplane/compliance/pii"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// ErrUnmapped: an event type the formats have no mapping for (a newer log than this build).
var ErrUnmapped = errors.New("siem: event type has no mapping")

// Entry is one record as a sink delivers it.
type Entry struct {
	Record *eventstore.Record
	// Seq is the sink's own sequence number: 1, 2, 3 … over everything it delivered, so a
	// receiver that sees a jump knows it missed messages, and one that sees a repeat (with the
	// same event id) knows it got a duplicate.
	Seq uint64
	// Redact, when set, hashes client addresses in the message (not possible in the raw
	// format, whose bytes are signed).
	Redact *Redactor
	// Personal, when set, opens the personal data sealed in the record (the plaintext, or
	// "[erased]") before it is formatted and redacted.
	Personal PersonalOpener
}

// PersonalOpener opens personal data sealed in the log (a *pii.Keyring).
type PersonalOpener interface {
	OpenMetadata(ctx context.Context, md *domain.Metadata) error
	OpenEvent(ctx context.Context, ev any) error
}

// openTimeout bounds the keyring's reads for one record: a database that does not answer fails
// the delivery, which the forwarder retries.
const openTimeout = 10 * time.Second

func (e Entry) open(d *decoded) error {
	if e.Personal == nil {
		return nil
	}
	// Most records hold nothing sealed: no keyring call for them.
	_, af := d.event.(*domain.AuthFailed)
	_, ac := d.event.(*domain.AgentConnected) // its remote_addr sealed by the node (sealbox)
	if !af && !ac && !strings.HasPrefix(d.md.ClientIP, pii.Prefix) && !strings.HasPrefix(d.md.UserAgent, pii.Prefix) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	// A copy of d's metadata goes to the keyring: d (one per record) then stays on the stack.
	md := d.md
	if err := e.Personal.OpenMetadata(ctx, &md); err != nil {
		return err
	}
	d.md = md
	return e.Personal.OpenEvent(ctx, d.event)
}

// Product names the software that produced the messages.
type Product struct {
	Name, Vendor, Version string
}

// DefaultProduct is tunnelplane's name in every format; Version is the build's.
func DefaultProduct(version string) Product {
	return Product{Name: "tunnelplane", Vendor: "tunnelplane", Version: version}
}

// decoded is an entry's record with its payload and metadata parsed.
type decoded struct {
	Entry
	event any // a domain event, or one of the log's own payloads (*eventstore.KeyRotatedPayload, …)
	md    domain.Metadata
	pool  *sync.Pool // where event came from, if it may go back (release)
}

// eventPools keep decoded domain events of each type for reuse: a sink decodes every record,
// and a fresh event per record, with the collection it caused, cost a sixth of formatting.
var eventPools = func() map[string]*sync.Pool {
	pools := map[string]*sync.Pool{}
	for _, t := range domain.EventTypes() {
		typ := t.Name
		pools[typ] = &sync.Pool{New: func() any {
			e, err := domain.New(typ)
			if err != nil {
				panic(fmt.Sprintf("siem: domain.EventTypes lists %s, which domain.New does not know", typ))
			}
			return e
		}}
	}
	return pools
}()

// release hands d's event back for the next record of its type, zeroed (a decoder merges into
// what it is given). Nothing may read d's event afterwards; what was copied out of it (strings,
// slices) stays valid.
func (d *decoded) release() {
	if d.pool == nil || d.event == nil {
		return
	}
	reflect.ValueOf(d.event).Elem().SetZero()
	d.pool.Put(d.event)
	d.event, d.pool = nil, nil
}

func decode(e Entry) (decoded, error) {
	if e.Record == nil {
		return decoded{}, errors.New("siem: entry without a record")
	}
	ev, pool, err := decodeEvent(e.Record.Type, e.Record.Payload)
	if err != nil {
		if errors.Is(err, domain.ErrUnknownEvent) {
			return decoded{}, fmt.Errorf("%w: %s", ErrUnmapped, e.Record.Type)
		}
		return decoded{}, fmt.Errorf("siem: record %d: %w", e.Record.Position, err)
	}
	var md domain.Metadata
	if len(e.Record.Metadata) > 0 {
		if err := decodeMetadata(e.Record.Metadata, &md); err != nil {
			return decoded{}, fmt.Errorf("siem: record %d metadata: %w", e.Record.Position, err)
		}
	}
	d := decoded{Entry: e, event: ev, md: md, pool: pool}
	if err := e.open(&d); err != nil {
		return decoded{}, fmt.Errorf("siem: record %d: open personal data: %w", e.Record.Position, err)
	}
	e.Redact.redact(&d)
	return d, nil
}

// decodeEvent parses a payload: the log's own records (genesis and key history) or a domain
// event. A payload it decodes is valid JSON (as json.Valid has it).
func decodeEvent(typ string, payload []byte) (any, *sync.Pool, error) {
	var ev any
	var pool *sync.Pool
	switch typ {
	case eventstore.TypeGenesis:
		ev = &eventstore.GenesisPayload{}
	case eventstore.TypeKeyRotated:
		ev = &eventstore.KeyRotatedPayload{}
	case eventstore.TypeKeyAdded:
		ev = &eventstore.KeyAddedPayload{}
	case eventstore.TypeKeyRevoked:
		ev = &eventstore.KeyRevokedPayload{}
	default:
		if pool = eventPools[typ]; pool != nil {
			ev = pool.Get()
			break
		}
		e, err := domain.New(typ)
		if err != nil {
			return nil, nil, err
		}
		ev = e
	}
	// encoding/json/v2 with the options that make it decode as v1 does (the decoder of the
	// log's writers): about twice as fast, for a sink decoding every record.
	if err := jsonv2.Unmarshal(payload, ev, decodeOptions); err != nil {
		// Half filled: not reused.
		return nil, nil, fmt.Errorf("decode %s: %w", typ, err)
	}
	return ev, pool, nil
}

// decodeOptions are v1's but for its way of reporting errors, whose first step is a separate
// pass checking the whole payload's syntax (a quarter of decoding): decoding checks it as it
// goes, and a payload that fails is not used (its event is not reused either), so which
// error, or how much of the event was filled, makes no difference here.
var decodeOptions = jsonv2.JoinOptions(jsonv1.DefaultOptionsV1(), jsonv1.ReportErrorsWithLegacySemantics(false))

// LogEventTypes are the log's own record types, which the formats map besides the domain's.
func LogEventTypes() []string {
	return []string{eventstore.TypeGenesis, eventstore.TypeKeyRotated, eventstore.TypeKeyAdded, eventstore.TypeKeyRevoked}
}

// when is the event's time: when it happened if the producer said, else when it was recorded.
func (d decoded) when() time.Time {
	if !d.md.OccurredAt.IsZero() {
		return d.md.OccurredAt
	}
	return d.Record.RecordedAt
}

func (d decoded) hash() string { return hex.EncodeToString(d.Record.Hash) }

// orgID is the tenant the event belongs to, if any: the metadata's, else the payload's
// org_id. The decoded event holds that already when its type has the field; only other types
// probe the payload.
func (d decoded) orgID() string {
	if d.md.OrgID != "" {
		return d.md.OrgID
	}
	if v := reflect.ValueOf(d.event); v.Kind() == reflect.Pointer && v.Elem().Kind() == reflect.Struct {
		if i := orgField(v.Elem().Type()); i >= 0 {
			return v.Elem().Field(i).String()
		}
	}
	var probe struct {
		OrgID string `json:"org_id"`
	}
	_ = json.Unmarshal(d.Record.Payload, &probe)
	return probe.OrgID
}

var orgFields sync.Map // reflect.Type → int

// orgField is the index of t's string field that json.Unmarshal fills from "org_id" (whose
// name or tag is that, ignoring case, as Unmarshal matches), or -1: none, or more than one
// candidate (then the probe decides).
func orgField(t reflect.Type) int {
	if i, ok := orgFields.Load(t); ok {
		return i.(int)
	}
	found := -1
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" {
			name = f.Name
		}
		if !f.IsExported() || f.Anonymous || name == "-" || !strings.EqualFold(name, "org_id") {
			continue
		}
		if found >= 0 || f.Type.Kind() != reflect.String {
			found = -1
			break
		}
		found = i
	}
	orgFields.Store(t, found)
	return found
}

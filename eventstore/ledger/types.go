package ledger

import (
	"fmt"
	"regexp"
	"sync"
)

// Limits on what one event may carry. They are part of the contract: an append over a limit is
// refused with ErrTooLarge and writes nothing.
const (
	MaxPayloadBytes  = 1 << 20  // 1 MiB of payload per event
	MaxMetadataBytes = 16 << 10 // 16 KiB of metadata per event
	MaxStreamIDBytes = 200
	MaxEventsPerCall = 10_000
)

var (
	typeNamePattern = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$`)
	streamIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@/-]*$`)
)

// Upcaster turns a payload of schema version v into one of version v+1.
type Upcaster = func(payload []byte) ([]byte, error)

// EventType describes one kind of event: a constant name (never derived from a Go type name) and
// the schema version new events are written with. Upcasters[v] lifts a stored payload from v to
// v+1; reads apply them in order, so handlers only ever see the current version.
type EventType struct {
	Name          string
	SchemaVersion uint32
	Upcasters     map[uint32]Upcaster
}

func (t EventType) validate() error {
	if !typeNamePattern.MatchString(t.Name) {
		return fmt.Errorf("%w: type name %q must be dotted lower-case words like \"tunnel.created\"", ErrInvalidEvent, t.Name)
	}
	if t.SchemaVersion == 0 {
		return fmt.Errorf("%w: type %q: schema version must be at least 1", ErrInvalidEvent, t.Name)
	}
	for v := uint32(1); v < t.SchemaVersion; v++ {
		if t.Upcasters[v] == nil {
			return fmt.Errorf("%w: type %q is at schema version %d but has no upcaster from version %d",
				ErrInvalidEvent, t.Name, t.SchemaVersion, v)
		}
	}
	return nil
}

// Registry is the closed set of event types a store accepts. It is safe for concurrent use.
type Registry struct {
	mu    sync.RWMutex
	types map[string]EventType
}

// NewRegistry returns a registry holding the store's own types plus the given ones.
func NewRegistry(types ...EventType) (*Registry, error) {
	r := &Registry{types: make(map[string]EventType)}
	for _, t := range append(logEventTypes(), types...) {
		if err := r.Register(t); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// MustRegistry is NewRegistry for package-level wiring where a bad type is a programming error.
func MustRegistry(types ...EventType) *Registry {
	r, err := NewRegistry(types...)
	if err != nil {
		panic(err)
	}
	return r
}

// Register adds a type. Registering the same name twice is an error.
func (r *Registry) Register(t EventType) error {
	if err := t.validate(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.types[t.Name]; dup {
		return fmt.Errorf("%w: type %q registered twice", ErrInvalidEvent, t.Name)
	}
	r.types[t.Name] = t
	return nil
}

// Lookup returns the registered type.
func (r *Registry) Lookup(name string) (EventType, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, ok := r.types[name]
	return t, ok
}

// Upcast lifts a stored payload to the type's current schema version.
func (r *Registry) Upcast(name string, version uint32, payload []byte) (uint32, []byte, error) {
	t, ok := r.Lookup(name)
	if !ok {
		return 0, nil, fmt.Errorf("upcast: %w: %q", ErrUnknownEventType, name)
	}
	if version > t.SchemaVersion {
		return 0, nil, fmt.Errorf("upcast %s: %w: stored schema version %d is newer than this build knows (%d)",
			name, ErrInvalidEvent, version, t.SchemaVersion)
	}
	for v := version; v < t.SchemaVersion; v++ {
		next, err := t.Upcasters[v](payload)
		if err != nil {
			return 0, nil, fmt.Errorf("upcast %s from v%d: %w", name, v, err)
		}
		payload = next
	}
	return t.SchemaVersion, payload, nil
}

// ValidateStreamID checks a caller-supplied stream id. Ids starting with '$' are reserved.
func ValidateStreamID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: empty", ErrInvalidStreamID)
	case len(id) > MaxStreamIDBytes:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidStreamID, len(id), MaxStreamIDBytes)
	case id[0] == '$':
		return fmt.Errorf("%w: %q", ErrReservedStream, id)
	case !streamIDPattern.MatchString(id):
		return fmt.Errorf("%w: %q: use letters, digits and . _ : @ / - (starting with a letter or digit)", ErrInvalidStreamID, id)
	}
	return nil
}

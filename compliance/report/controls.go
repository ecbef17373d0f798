package report

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

//go:embed controls.json
var controlsJSON []byte

// ErrUnknownFramework: no framework of that name in controls.json.
var ErrUnknownFramework = errors.New("unknown report")

// Mapping is controls.json: the policy the rules apply, the rules, and each framework's controls.
type Mapping struct {
	Policy     Policy          `json:"policy"`
	Rules      map[string]Rule `json:"rules"`
	Frameworks []Framework     `json:"frameworks"`
}

// Policy holds the thresholds of the exception rules.
type Policy struct {
	MaxLifetimeDays     map[string]int `json:"max_lifetime_days"`
	RotationAgeDays     map[string]int `json:"rotation_age_days"`
	AuthFailures        AuthPolicy     `json:"auth_failures"`
	ApprovedCiphers     []string       `json:"approved_ciphers"`
	ApprovedKex         []string       `json:"approved_kex"`
	DeprecatedProtocols []string       `json:"deprecated_protocols"`
	// MaxRows bounds each table of a report; the counts above it are complete.
	MaxRows int `json:"max_rows"`
}

// AuthPolicy is the repeated-failures rule's threshold within a window.
type AuthPolicy struct {
	Threshold     int64 `json:"threshold"`
	WindowMinutes int   `json:"window_minutes"`
}

// Rule describes an exception rule (its implementation is in rules.go under the same name).
type Rule struct {
	Title  string   `json:"title"`
	Events []string `json:"events"`
	Rule   string   `json:"rule"`
}

// Framework is one report: its controls in order.
type Framework struct {
	ID       string    `json:"id"`
	Title    string    `json:"title"`
	Controls []Control `json:"controls"`
}

// Control is one control: what it requires, the event types counted as its evidence, the
// exception rules that test it, its evidence tables, and what the log does not record.
type Control struct {
	ID          string     `json:"id"`
	Title       string     `json:"title"`
	Statement   string     `json:"statement"`
	Events      []string   `json:"events"`
	Exceptions  []string   `json:"exceptions"`
	Evidence    []Evidence `json:"evidence"`
	NotRecorded []string   `json:"not_recorded"`
}

// Evidence kinds.
const (
	// EvidenceEvents lists the window's events of Types.
	EvidenceEvents = "events"
	// EvidenceDaily charts the requests Types stand for per day.
	EvidenceDaily = "daily"
	// EvidenceSessions tables agent sessions by node, protocol, cipher and key exchange.
	EvidenceSessions = "sessions"
)

// Evidence is one table or chart of a control's section.
type Evidence struct {
	Kind  string   `json:"kind"`
	Title string   `json:"title"`
	Types []string `json:"types,omitempty"`
}

// LoadMapping parses and checks the embedded controls.json.
func LoadMapping() (*Mapping, error) { return parseMapping(controlsJSON) }

func parseMapping(b []byte) (*Mapping, error) {
	var m Mapping
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("controls.json: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate reports every problem of the mapping: unknown rules or evidence kinds, event types
// the compliance read model does not index, missing thresholds.
func (m *Mapping) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("controls.json: "+format, args...)) }
	known := indexedTypes()
	checkTypes := func(where string, types []string) {
		for _, t := range types {
			if !known[t] {
				bad("%s: %q is not an event type the compliance read model indexes", where, t)
			}
		}
	}
	for name, r := range m.Rules {
		if _, ok := rules[name]; !ok {
			bad("rule %q has no implementation", name)
		}
		if r.Title == "" || r.Rule == "" {
			bad("rule %q needs a title and its rule", name)
		}
		checkTypes("rule "+name, r.Events)
	}
	for name := range rules {
		if _, ok := m.Rules[name]; !ok {
			bad("rule %q is implemented but not described", name)
		}
	}
	p := m.Policy
	if p.AuthFailures.WindowMinutes%60 != 0 {
		bad("policy: auth_failures.window_minutes must be whole hours (the read model counts failures per hour)")
	}
	if p.AuthFailures.Threshold < 1 || p.AuthFailures.WindowMinutes < 1 || p.MaxRows < 1 || len(p.ApprovedCiphers) == 0 || len(p.ApprovedKex) == 0 {
		bad("policy: auth_failures, max_rows, approved_ciphers and approved_kex are required")
	}
	for _, kind := range []string{"agent_token", "access_key"} {
		if p.MaxLifetimeDays[kind] < 1 {
			bad("policy: max_lifetime_days.%s is required", kind)
		}
	}
	for _, kind := range []string{"agent_token", "access_key", "log_key", "token_key", "node_key"} {
		if p.RotationAgeDays[kind] < 1 {
			bad("policy: rotation_age_days.%s is required", kind)
		}
	}
	seen := map[string]bool{}
	for _, f := range m.Frameworks {
		if f.ID == "" || seen[f.ID] {
			bad("framework %q: empty or repeated id", f.ID)
		}
		seen[f.ID] = true
		for _, c := range f.Controls {
			where := f.ID + " " + c.ID
			if c.ID == "" || c.Title == "" || c.Statement == "" || len(c.Events) == 0 {
				bad("%s: id, title, statement and events are required", where)
			}
			checkTypes(where, c.Events)
			for _, r := range c.Exceptions {
				if _, ok := m.Rules[r]; !ok {
					bad("%s: unknown rule %q", where, r)
				}
			}
			for _, e := range c.Evidence {
				switch e.Kind {
				case EvidenceEvents, EvidenceDaily:
					if len(e.Types) == 0 {
						bad("%s: evidence %q lists no types", where, e.Title)
					}
					checkTypes(where, e.Types)
				case EvidenceSessions:
				default:
					bad("%s: unknown evidence kind %q", where, e.Kind)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// Framework finds a framework by id.
func (m *Mapping) Framework(id string) (*Framework, error) {
	for i := range m.Frameworks {
		if m.Frameworks[i].ID == id {
			return &m.Frameworks[i], nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownFramework, truncate(id, 32))
}

// FrameworkIDs lists the reports by name.
func (m *Mapping) FrameworkIDs() []string {
	out := make([]string, len(m.Frameworks))
	for i, f := range m.Frameworks {
		out[i] = f.ID
	}
	return out
}

func days(n int) time.Duration { return time.Duration(n) * 24 * time.Hour }

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

package siem

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
)

func fullMetadata() domain.Metadata {
	return domain.Metadata{Actor: "alice", OrgID: "org-1", CorrelationID: "c-1", CausationID: "k-1", RequestID: "r-1", ClientIP: "192.0.2.1",
		UserAgent: "curl/8 ✓", Command: "create_tunnel", NodeID: "n-1", OccurredAt: time.Date(2026, 12, 2, 6, 0, 1, 123456789, time.FixedZone("", 3600))}
}

// Metadata as the log writes it, every field set, takes the fast path: a field added to
// domain.Metadata without it here would send every record through encoding/json.
func TestMetadataAsWrittenTakesTheFastPath(t *testing.T) {
	t.Parallel()
	for _, md := range []domain.Metadata{fullMetadata(), {}, {Actor: "system:audit"}} {
		raw, err := json.Marshal(md)
		if err != nil {
			t.Fatal(err)
		}
		var got domain.Metadata
		if !plainMetadata(raw, &got) || !reflect.DeepEqual(got, decodeViaJSON(t, raw)) {
			t.Errorf("%s: fast path %v, %+v", raw, plainMetadata(raw, &domain.Metadata{}), got)
		}
	}
}

func decodeViaJSON(t *testing.T, raw []byte) domain.Metadata {
	var md domain.Metadata
	if err := json.Unmarshal(raw, &md); err != nil {
		t.Fatal(err)
	}
	return md
}

// decodeMetadata decodes what json.Unmarshal decodes, to the same value, and refuses what it
// refuses.
func FuzzDecodeMetadata(f *testing.F) {
	full, _ := json.Marshal(fullMetadata())
	f.Add(full)
	for _, s := range []string{`{}`, `{"actor":"a"}`, `{"actor":"a","actor":"b"}`, `{"Actor":"a"}`, `{"actor":"a\"b"}`, `{"actor":"\u00e9"}`,
		`{"actor": "a"}`, `{"actor":"a",}`, `{"actor":1}`, `{"occurred_at":"2026-12-02T06:00:01Z"}`, `{"occurred_at":"yesterday"}`,
		`{"occurred_at":null}`, `{"client_ip":"\xff"}`, `{"x":"y"}`, `{"actor":"a"} `, `null`, `{"actor":"a"}}`, `{"actor":"a""}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var want, got domain.Metadata
		werr := json.Unmarshal(raw, &want)
		gerr := decodeMetadata(raw, &got)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("%q: json says %v, decodeMetadata %v", raw, werr, gerr)
		}
		if werr == nil && !reflect.DeepEqual(want, got) {
			t.Fatalf("%q:\njson %+v\n got %+v", raw, want, got)
		}
	})
}

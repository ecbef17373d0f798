package siem_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/siem"
)

// The sinks decode payloads with encoding/json/v2 (faster) in v1's semantics: every event type
// must come out as encoding/json (v1), the log writers' decoder, makes it, even where v2's
// defaults differ.
func TestPayloadsDecodeAsEncodingJSONDecodesThem(t *testing.T) {
	t.Parallel()
	for typ, sample := range samples() {
		payload, err := json.Marshal(sample)
		if err != nil {
			t.Fatal(err)
		}
		got, err := siem.DecodeEvent(typ, payload)
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		want := reflect.New(reflect.TypeOf(got).Elem()).Interface()
		if err := json.Unmarshal(payload, want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\nv2 %+v\nv1 %+v", typ, got, want)
		}
		if reflect.DeepEqual(got, reflect.New(reflect.TypeOf(got).Elem()).Interface()) {
			t.Errorf("%s: the sample decodes to the zero event", typ)
		}
		// A sink hands each event back for the next record of its type: nothing of this one
		// may show in the next.
		siem.ReleaseEvent(typ, got)
		if again, err := siem.DecodeEvent(typ, []byte(`{}`)); err != nil {
			t.Fatalf("%s: %v", typ, err)
		} else if zero := reflect.New(reflect.TypeOf(again).Elem()).Interface(); !reflect.DeepEqual(again, zero) {
			t.Errorf("%s: an empty payload decoded after a reuse to %+v", typ, again)
		}
	}
	// v1 takes these, v2's defaults do not: a repeated name (the last wins), a name in another
	// case, invalid UTF-8 (replaced).
	for _, payload := range []string{
		`{"org_id":"a","org_id":"b","name":"x"}`,
		`{"ORG_ID":"b","name":"x"}`,
		"{\"org_id\":\"b\",\"name\":\"x\xff\"}",
	} {
		got, err := siem.DecodeEvent(domain.TypeOrganizationCreated, []byte(payload))
		if err != nil {
			t.Fatalf("%s: %v", payload, err)
		}
		want := reflect.New(reflect.TypeOf(got).Elem()).Interface()
		if err := json.Unmarshal([]byte(payload), want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\ngot %+v\nv1  %+v", payload, got, want)
		}
	}
	if _, err := siem.DecodeEvent(domain.TypeOrganizationCreated, []byte(`{"org_id":`)); err == nil {
		t.Fatal("a truncated payload decoded")
	}
}

// A payload decodes exactly when encoding/json (v1) takes it, to the same event, and one that
// decodes is valid JSON (the OCSF format then copies it without checking it again). Decoding
// checks the syntax as it goes, not in a pass of its own first as v1 does.
func FuzzDecodeEventIsEncodingJSON(f *testing.F) {
	for _, s := range []string{`{"org_id":"a","name":"x","created_by":"u"}`, `{"org_id":"a"} x`, `{"org_id":"a","x":[1,}`,
		`{"org_id":1}`, `{"org_id":"a","x":{"y":[true,null,"\u00e9"]}}`, `{"org_id":"a",}`, `[]`, `null`, `{"ORG_ID":"b","Name":"x"}`,
		"{\"name\":\"\xff\"}", `{"org_id":"a","org_id":"b"}`, `{"name":"a\"b\\c"}`, ` {"name":"x"} `, `{"name":"x"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := siem.DecodeEvent(domain.TypeOrganizationCreated, in)
		var want domain.OrganizationCreated
		werr := json.Unmarshal(in, &want)
		if (err == nil) != (werr == nil) {
			t.Fatalf("%q: decoded with error %v, encoding/json with %v", in, err, werr)
		}
		if err != nil {
			return
		}
		if !json.Valid(in) {
			t.Fatalf("%q decoded but is not valid JSON", in)
		}
		if !reflect.DeepEqual(got, &want) {
			t.Fatalf("%q: %+v, encoding/json %+v", in, got, want)
		}
		siem.ReleaseEvent(domain.TypeOrganizationCreated, got)
	})
}

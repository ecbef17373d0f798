package siem

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/google/uuid"
)

// The appenders write what encoding/json writes: a string escaped the same way (invalid UTF-8
// and HTML characters included), embedded JSON compacted and escaped the same way, and the
// same error for what is not JSON.
func FuzzJSONAppend(f *testing.F) {
	for _, s := range []string{"", "plain", `{"a": [1, 2]}`, "<&>\u2028\u2029", "\x00\x1f\x7f\"\\", "\xff\xe2\x80", `{"s":"a\"<b"}`, " null ", `"x`, "é✓𝄞"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		want, err := json.Marshal(string(in))
		if err != nil {
			t.Fatal(err)
		}
		if got := appendJSONString([]byte("x"), string(in)); !bytes.Equal(got[1:], want) || got[0] != 'x' {
			t.Fatalf("string %q: got %s, want %s", in, got[1:], want)
		}
		want, werr := json.Marshal(json.RawMessage(in))
		got, gerr := appendJSONRaw([]byte("x"), in)
		if (werr == nil) != (gerr == nil) || (werr == nil && (!bytes.Equal(got[1:], want) || got[0] != 'x')) {
			t.Fatalf("raw %q: got %s (%v), want %s (%v)", in, got, gerr, want, werr)
		}
	})
}

func TestAppendUUIDIsString(t *testing.T) {
	t.Parallel()
	for range 100 {
		u := uuid.New()
		if got := string(appendUUID(nil, u)); got != u.String() {
			t.Fatalf("%s, want %s", got, u)
		}
	}
}

package siem

import (
	"encoding/json"
	"unicode/utf8"

	"github.com/google/uuid"
)

// The formats write JSON by appending to one buffer (maps and reflection cost 186 allocations
// a record). What they write must stay byte for byte what encoding/json writes: the same
// escaping (HTML characters too) and the same compaction of embedded JSON; FuzzJSONAppend and
// TestOCSFIsTheMapBuiltReference hold them to it.

const hexDigits = "0123456789abcdef"

// plainASCII holds the bytes a JSON string takes as they are: ASCII, not a control character,
// not '"', '\\' or an HTML character.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendJSONString appends s as a JSON string, escaped as json.Marshal escapes it.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendJSONStringBody(b, s)
	return append(b, '"')
}

// appendJSONStringBody is appendJSONString without the quotes. It is encoding/json's
// appendString with escapeHTML: '"' and '\' escaped, control characters as \b \f \n \r \t or
// \u00XX, '<' '>' '&' as \u00XX, invalid UTF-8 as \ufffd, U+2028 and U+2029 escaped.
func appendJSONStringBody(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		// Most strings are plain ASCII: one table lookup a byte (the formats' hottest loop).
		for i < len(s) && plainASCII[s[i]] {
			i++
		}
		if i == len(s) {
			break
		}
		if c := s[i]; c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}

// appendJSONRaw appends raw, a JSON value, as json.Marshal writes a json.RawMessage: compacted,
// with the HTML characters and U+2028/U+2029 escaped. The payloads the log holds are compact
// and plain already (json.Marshal wrote them), so they are copied as they are once a scan
// found nothing to change; anything else goes through encoding/json.
func appendJSONRaw(b []byte, raw []byte) ([]byte, error) {
	return appendJSONRawChecked(b, raw, false)
}

// appendJSONRawChecked is appendJSONRaw of raw known to be valid JSON when valid (a payload
// just decoded): the grammar is not checked again.
func appendJSONRawChecked(b []byte, raw []byte, valid bool) ([]byte, error) {
	if plainCompactJSON(raw, valid) {
		return append(b, raw...), nil
	}
	out, err := json.Marshal(json.RawMessage(raw))
	if err != nil {
		return nil, err
	}
	return append(b, out...), nil
}

// plainCompactJSON reports whether raw is valid JSON that encoding/json would write unchanged
// as a RawMessage: no whitespace outside strings, nothing it escapes. valid: raw is known to be
// valid JSON.
func plainCompactJSON(raw []byte, valid bool) bool {
	if len(raw) == 0 {
		return false
	}
	for i := 0; i < len(raw); i++ {
		switch compactClass[raw[i]] {
		case compactChanged, compactSpace:
			return false
		case compactQuote: // a string, to its closing quote
			for i++; i < len(raw); i++ {
				c := compactClass[raw[i]]
				if c == compactChanged {
					return false
				}
				if c == compactQuote {
					break
				}
				if c == compactEscape {
					i++ // the escaped byte: '"' or '\\' among them
				}
			}
		}
	}
	// Whitespace aside, the scan does not check the grammar: json.Valid does, without
	// allocating.
	return valid || json.Valid(raw)
}

// What plainCompactJSON makes of a byte.
const (
	compactPlain   = iota
	compactChanged // escaped wherever it is: '<', '>', '&', and 0xE2 (which may start U+2028 or U+2029)
	compactSpace   // whitespace: dropped outside strings
	compactQuote
	compactEscape
)

var compactClass = func() (t [256]byte) {
	for _, c := range []byte{'<', '>', '&', 0xE2} {
		t[c] = compactChanged
	}
	for _, c := range []byte{' ', '\t', '\n', '\r'} {
		t[c] = compactSpace
	}
	t['"'], t['\\'] = compactQuote, compactEscape
	return t
}()

// appendUUID appends u in its canonical form (what uuid.UUID.String returns).
func appendUUID(b []byte, u uuid.UUID) []byte {
	for i, x := range u {
		switch i {
		case 4, 6, 8, 10:
			b = append(b, '-')
		}
		b = append(b, hexDigits[x>>4], hexDigits[x&0xF])
	}
	return b
}

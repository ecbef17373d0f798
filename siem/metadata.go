package siem

import (
	"bytes"
	"encoding/json"
	"time"
	"unicode/utf8"

	"github.com/tunnelplane/tunnelplane/domain"
)

// decodeMetadata is json.Unmarshal(raw, md) into a zero md, faster for metadata as the log
// holds it (json.Marshal of domain.Metadata: one flat object of its own keys with plain string
// values). Anything else (escapes, whitespace, other keys or spellings, other types) is left
// to encoding/json, which decides; FuzzDecodeMetadata holds the two to the same result.
func decodeMetadata(raw []byte, md *domain.Metadata) error {
	if plainMetadata(raw, md) {
		return nil
	}
	// Decoded into a variable of its own, so that only records taking this path allocate it.
	var full domain.Metadata
	if err := json.Unmarshal(raw, &full); err != nil {
		return err
	}
	*md = full
	return nil
}

// plainMetadata decodes raw into md if it is {"key":"value",…} with keys of domain.Metadata
// spelled as its tags and values without escapes, control characters or invalid UTF-8 (which
// encoding/json would take as they are); otherwise it reports false, md half filled.
func plainMetadata(raw []byte, md *domain.Metadata) bool {
	n := len(raw)
	if n < 2 || raw[0] != '{' || raw[n-1] != '}' {
		return false
	}
	if n == 2 {
		return true
	}
	for i := 1; ; {
		key, next, ok := plainJSONString(raw, i)
		if !ok || next >= n || raw[next] != ':' {
			return false
		}
		val, end, ok := plainJSONString(raw, next+1)
		if !ok || end >= n {
			return false
		}
		switch string(key) {
		case "actor":
			md.Actor = string(val)
		case "org_id":
			md.OrgID = string(val)
		case "correlation_id":
			md.CorrelationID = string(val)
		case "causation_id":
			md.CausationID = string(val)
		case "request_id":
			md.RequestID = string(val)
		case "client_ip":
			md.ClientIP = string(val)
		case "user_agent":
			md.UserAgent = string(val)
		case "command":
			md.Command = string(val)
		case "node_id":
			md.NodeID = string(val)
		case "occurred_at":
			var at time.Time
			if err := at.UnmarshalJSON(raw[next+1 : end]); err != nil {
				return false
			}
			md.OccurredAt = at
		default:
			return false
		}
		switch {
		case raw[end] == ',':
			i = end + 1
		case end == n-1: // the closing brace
			return true
		default:
			return false
		}
	}
}

// plainJSONString is the content of the JSON string starting at raw[i] and the index after its
// closing quote, if it has no escapes, no control characters and is valid UTF-8.
func plainJSONString(raw []byte, i int) (s []byte, next int, ok bool) {
	if i >= len(raw) || raw[i] != '"' {
		return nil, 0, false
	}
	j := bytes.IndexByte(raw[i+1:], '"')
	if j < 0 {
		return nil, 0, false
	}
	s = raw[i+1 : i+1+j]
	for _, c := range s {
		if c < 0x20 || c == '\\' {
			return nil, 0, false
		}
	}
	if !utf8.Valid(s) {
		return nil, 0, false
	}
	return s, i + j + 2, true
}

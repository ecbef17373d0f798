package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
)

// Headers the API reads or writes besides the standard ones.
const (
	HeaderRequestID      = "X-Request-ID"
	HeaderCorrelationID  = "X-Correlation-ID"
	HeaderIdempotencyKey = "Idempotency-Key"
	headerETag           = "ETag"
	headerIfMatch        = "If-Match"
)

// Pagination bounds.
const (
	DefaultLimit = 50
	MaxLimit     = 500
)

type requestIDs struct{ request, correlation string }

const requestIDsKey = "tunnelplane.request_ids"

func requestIDsFrom(c echo.Context) requestIDs {
	ids, _ := c.Get(requestIDsKey).(requestIDs)
	return ids
}

// clientID accepts a caller's id header when it is short and printable; otherwise a fresh id is
// used (a hostile header must not end up in logs or the audit log verbatim). The bound is the
// audit log's, so an accepted id is stored as sent.
func clientID(v string) string {
	if v == "" || len(v) > commands.MaxIDBytes || strings.IndexFunc(v, func(r rune) bool { return r > unicode.MaxASCII || !unicode.IsPrint(r) || r == ' ' }) >= 0 {
		return uuid.Must(uuid.NewV7()).String()
	}
	return v
}

// decodeBody reads a JSON request body into dst strictly: one JSON value, no unknown fields,
// within the size limit (the body was wrapped by http.MaxBytesReader in the middleware).
func decodeBody(c echo.Context, dst any) error {
	req := c.Request()
	if ct := req.Header.Get(echo.HeaderContentType); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != echo.MIMEApplicationJSON && !strings.HasSuffix(mt, "+json")) {
			return &requestError{kind: ErrUnsupportedMediaType, detail: fmt.Sprintf("Content-Type %q: send application/json", ct)}
		}
	}
	raw, err := io.ReadAll(req.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &requestError{kind: ErrBodyTooLarge, detail: fmt.Sprintf("the body is larger than %d bytes", mbe.Limit)}
		}
		return badRequest("", "the body could not be read: %v", err)
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return badRequest("", "the body is empty; send a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return badRequest("", "malformed JSON at byte %d: %v", se.Offset, err)
		case errors.As(err, &te):
			field := te.Field
			if field == "" {
				field = "(body)"
			}
			return invalid(field, "must be a JSON %s, not %s", jsonKind(te.Type.Kind().String()), te.Value)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return badRequest(field, "unknown field")
		case errors.Is(err, io.ErrUnexpectedEOF):
			return badRequest("", "malformed JSON: the body ends early")
		default:
			return badRequest("", "malformed JSON: %v", err)
		}
	}
	if dec.More() {
		return badRequest("", "malformed JSON: more than one value in the body")
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		return badRequest("", "malformed JSON: trailing data after the object")
	}
	return nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "struct", "map":
		return "object"
	case "slice", "array":
		return "array"
	case "ptr":
		return "value"
	default:
		return "number"
	}
}

// query reads query parameters, rejecting ones the endpoint does not know (a typo in a filter
// must not silently widen a search).
type query struct {
	c       echo.Context
	allowed map[string]bool
}

func newQuery(c echo.Context, names ...string) (*query, error) {
	q := &query{c: c, allowed: map[string]bool{}}
	for _, n := range names {
		q.allowed[n] = true
	}
	for k, vs := range c.QueryParams() {
		if !q.allowed[k] {
			return nil, badRequest(k, "unknown query parameter (this endpoint takes: %s)", strings.Join(names, ", "))
		}
		if len(vs) > 1 {
			return nil, badRequest(k, "given %d times", len(vs))
		}
	}
	return q, nil
}

func (q *query) str(name string) string { return q.c.QueryParam(name) }

func (q *query) time(name string) (*time.Time, error) {
	v := q.c.QueryParam(name)
	if v == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return nil, badRequest(name, "must be an RFC 3339 time like 2026-01-02T15:04:05Z")
	}
	return &t, nil
}

// window parses the optional times fromName and toName; when both are given, to must be after
// from.
func (q *query) window(fromName, toName string) (from, to *time.Time, err error) {
	if from, err = q.time(fromName); err != nil {
		return nil, nil, err
	}
	if to, err = q.time(toName); err != nil {
		return nil, nil, err
	}
	if from != nil && to != nil && !from.Before(*to) {
		return nil, nil, badRequest(toName, "must be after %s", fromName)
	}
	return from, to, nil
}

func (q *query) oneOf(name, def string, values ...string) (string, error) {
	v := q.c.QueryParam(name)
	if v == "" {
		return def, nil
	}
	for _, ok := range values {
		if v == ok {
			return v, nil
		}
	}
	return "", badRequest(name, "must be one of %s", strings.Join(values, ", "))
}

// page is the pagination of a list request.
type page struct {
	limit  int
	cursor []any // the sort key of the last item of the previous page; nil for the first page
	kind   string
}

// cursorBody is what an opaque cursor holds: the list it belongs to and the last sort key.
type cursorBody struct {
	Kind string `json:"k"`
	Key  []any  `json:"v"`
}

func (q *query) page(kind string) (page, error) {
	p := page{limit: DefaultLimit, kind: kind}
	if v := q.c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxLimit {
			return p, badRequest("limit", "must be a number from 1 to %d", MaxLimit)
		}
		p.limit = n
	}
	if v := q.c.QueryParam("cursor"); v != "" {
		key, err := decodeCursor(kind, v)
		if err != nil {
			return p, err
		}
		p.cursor = key
	}
	return p, nil
}

// decodeCursor reads an opaque cursor of the list kind: the sort key of the last item seen.
func decodeCursor(kind, v string) ([]any, error) {
	raw, err := base64.RawURLEncoding.DecodeString(v)
	var cb cursorBody
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		err = dec.Decode(&cb)
	}
	if err != nil || cb.Kind != kind || len(cb.Key) == 0 || len(cb.Key) > 4 {
		return nil, badRequest("cursor", "is not a cursor of this list; pass next_cursor from the previous page unchanged")
	}
	return cb.Key, nil
}

func (p page) cursorString(i int) (string, error) {
	if i >= len(p.cursor) {
		return "", badRequest("cursor", "is not a cursor of this list")
	}
	s, ok := p.cursor[i].(string)
	if !ok {
		return "", badRequest("cursor", "is not a cursor of this list")
	}
	return s, nil
}

func (p page) cursorInt(i int) (int64, error) {
	if i >= len(p.cursor) {
		return 0, badRequest("cursor", "is not a cursor of this list")
	}
	n, ok := p.cursor[i].(json.Number)
	if !ok {
		return 0, badRequest("cursor", "is not a cursor of this list")
	}
	v, err := n.Int64()
	if err != nil {
		return 0, badRequest("cursor", "is not a cursor of this list")
	}
	return v, nil
}

// cursorID is the cursor's i-th key, which must be an id (a UUID).
func (p page) cursorID(i int) (string, error) {
	id, err := p.cursorString(i)
	if err != nil || !domain.ValidID(id) {
		return "", badRequest("cursor", "is not a cursor of this list")
	}
	return id, nil
}

func (p page) cursorTime(i int) (time.Time, error) {
	s, err := p.cursorString(i)
	if err != nil {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, badRequest("cursor", "is not a cursor of this list")
	}
	return t, nil
}

func encodeCursor(kind string, key ...any) string {
	b, _ := json.Marshal(cursorBody{Kind: kind, Key: key})
	return base64.RawURLEncoding.EncodeToString(b)
}

// List is the shape of every list response.
type List[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// listOf cuts rows fetched with limit+1 down to a page and makes the cursor from the last item.
func listOf[T any](p page, rows []T, key func(T) []any) List[T] {
	out := List[T]{Items: rows}
	if out.Items == nil {
		out.Items = []T{}
	}
	if len(rows) > p.limit {
		out.Items = rows[:p.limit]
		out.NextCursor = encodeCursor(p.kind, key(out.Items[p.limit-1])...)
	}
	return out
}

// convert maps read-model rows onto the API's types.
func convert[S, D any](rows []S, f func(S) D) []D {
	if rows == nil {
		return nil
	}
	out := make([]D, len(rows))
	for i, r := range rows {
		out[i] = f(r)
	}
	return out
}

// waitFor implements read-your-writes: with wait_for=<position> the read waits (bounded) until the
// named projections have applied that position.
func (s *Server) waitFor(c echo.Context, names ...string) error {
	v := c.QueryParam("wait_for")
	if v == "" {
		return nil
	}
	var pos uint64
	var err error
	if v == "latest" {
		// Everything the log holds as the request arrives, whoever wrote it.
		head, err := s.cfg.Log.Head(c.Request().Context())
		if err != nil {
			return fmt.Errorf("wait_for latest: %w", err)
		}
		if head == 0 {
			return nil
		}
		pos = head - 1
	} else if pos, err = strconv.ParseUint(v, 10, 64); err != nil {
		return badRequest("wait_for", "must be a log position (the \"position\" of a write response) or \"latest\"")
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), s.cfg.MaxWait)
	defer cancel()
	if len(names) == 0 {
		err = s.cfg.Log.WaitForPosition(ctx, pos)
	} else {
		err = s.cfg.Runner.WaitFor(ctx, pos, names...)
	}
	if errors.Is(err, context.DeadlineExceeded) && c.Request().Context().Err() == nil {
		return fmt.Errorf("wait_for %d after %s: %w", pos, s.cfg.MaxWait, ErrNotCaughtUp)
	}
	if err != nil {
		return fmt.Errorf("wait_for %d: %w", pos, err)
	}
	return nil
}

// ifMatch parses If-Match: a version number (quoted as an entity tag or bare). "*" or no header
// means no precondition.
func ifMatch(c echo.Context) (*uint64, error) {
	v := strings.TrimSpace(c.Request().Header.Get(headerIfMatch))
	if v == "" || v == "*" {
		return nil, nil
	}
	v = strings.TrimPrefix(v, "W/")
	v = strings.Trim(v, `"`)
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n == 0 {
		return nil, badRequest("If-Match", "must be the resource's version as returned in ETag, like \"3\"")
	}
	return &n, nil
}

func etag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }

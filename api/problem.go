package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/oidcauth"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/projections"
)

// Sentinel errors of the API (besides those of commands, domain and eventstore). Match with
// errors.Is.
var (
	// ErrBadRequest: the request cannot be read (malformed JSON, an unknown field, a bad query
	// parameter or header).
	ErrBadRequest = errors.New("bad request")
	// ErrBodyTooLarge: the request body exceeds Config.MaxBodyBytes.
	ErrBodyTooLarge = errors.New("request body too large")
	// ErrUnsupportedMediaType: the body is not JSON.
	ErrUnsupportedMediaType = errors.New("unsupported media type")
	// ErrPreconditionFailed: If-Match does not name the resource's current version.
	ErrPreconditionFailed = errors.New("precondition failed")
	// ErrNotCaughtUp: the read models did not reach wait_for in time.
	ErrNotCaughtUp = errors.New("the read models have not caught up with the requested position yet")
)

// ProblemTypeBase prefixes the type URI of every problem the API returns (and the node's ingress).
const ProblemTypeBase = domain.ProblemTypeBase

// Problem is an RFC 9457 problem details object, with the field errors of a validation failure
// and the ids that tie the response to the server's logs and the audit log.
type Problem struct {
	Type          string              `json:"type"`
	Title         string              `json:"title"`
	Status        int                 `json:"status"`
	Detail        string              `json:"detail,omitempty"`
	Instance      string              `json:"instance,omitempty"`
	RequestID     string              `json:"request_id,omitempty"`
	CorrelationID string              `json:"correlation_id,omitempty"`
	Errors        []domain.FieldError `json:"errors,omitempty"`
}

// requestError is a problem with the request itself (not with what it asks for).
type requestError struct {
	kind   error
	detail string
	fields []domain.FieldError
}

func (e *requestError) Error() string { return fmt.Sprintf("%s: %s", e.kind, e.detail) }
func (e *requestError) Unwrap() error { return e.kind }

func badRequest(field, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	e := &requestError{kind: ErrBadRequest, detail: msg}
	if field != "" {
		e.detail = field + ": " + msg
		e.fields = []domain.FieldError{{Field: field, Message: msg}}
	}
	return e
}

func invalid(field, format string, args ...any) error {
	return &domain.ValidationError{Fields: []domain.FieldError{{Field: field, Message: fmt.Sprintf(format, args...)}}}
}

// authError is a failed authentication; code is the RFC 6750 error code for WWW-Authenticate.
type authError struct {
	code, detail string
}

func (e *authError) Error() string {
	return fmt.Sprintf("%s: %s", commands.ErrUnauthenticated, e.detail)
}
func (e *authError) Unwrap() error { return commands.ErrUnauthenticated }

// classified is how one error is answered.
type classified struct {
	status int
	slug   string
	detail string
	fields []domain.FieldError
	// internal: the detail would leak internals; the client gets a generic text and the error is
	// logged.
	internal bool
}

// classify maps an error onto a status. It is the only place where errors meet HTTP statuses.
func classify(err error) classified {
	var ve *domain.ValidationError
	var re *requestError
	var he *echo.HTTPError
	if cl, ok := exportProblem(err); ok {
		return cl
	}
	switch {
	case errors.As(err, &ve):
		return classified{status: http.StatusUnprocessableEntity, slug: "validation", detail: ve.Error(), fields: ve.Fields}
	case errors.As(err, &re):
		status, slug := http.StatusBadRequest, "bad-request"
		switch {
		case errors.Is(re.kind, ErrBodyTooLarge):
			status, slug = http.StatusRequestEntityTooLarge, "body-too-large"
		case errors.Is(re.kind, ErrUnsupportedMediaType):
			status, slug = http.StatusUnsupportedMediaType, "unsupported-media-type"
		}
		return classified{status: status, slug: slug, detail: re.detail, fields: re.fields}
	case errors.Is(err, commands.ErrUnauthenticated):
		return classified{status: http.StatusUnauthorized, slug: "unauthenticated", detail: err.Error()}
	case errors.Is(err, commands.ErrForbidden):
		return classified{status: http.StatusForbidden, slug: "forbidden", detail: err.Error()}
	case errors.Is(err, ErrPreconditionFailed):
		return classified{status: http.StatusPreconditionFailed, slug: "precondition-failed", detail: err.Error()}
	case errors.Is(err, commands.ErrIdempotencyMismatch):
		return classified{status: http.StatusUnprocessableEntity, slug: "idempotency-key-reused", detail: err.Error()}
	case errors.Is(err, commands.ErrInProgress):
		return classified{status: http.StatusConflict, slug: "in-progress", detail: err.Error()}
	case errors.Is(err, domain.ErrNotFound), errors.Is(err, projections.ErrUnknownProjection):
		return classified{status: http.StatusNotFound, slug: "not-found", detail: err.Error()}
	case errors.Is(err, domain.ErrInvalidState):
		return classified{status: http.StatusConflict, slug: "invalid-state", detail: err.Error()}
	case errors.Is(err, domain.ErrConflict), errors.Is(err, eventstore.ErrWrongExpectedVersion), errors.Is(err, projections.ErrRebuildRunning):
		return classified{status: http.StatusConflict, slug: "conflict", detail: err.Error()}
	case errors.Is(err, ErrNotCaughtUp):
		return classified{status: http.StatusServiceUnavailable, slug: "not-caught-up", detail: err.Error()}
	case errors.Is(err, projections.ErrStopped):
		return classified{status: http.StatusServiceUnavailable, slug: "projection-stopped",
			detail: "a read model this request needs has stopped on an error; an operator must fix or rebuild it", internal: true}
	case errors.Is(err, eventstore.ErrRecordPastHead):
		return classified{status: http.StatusServiceUnavailable, slug: "log-record-past-head",
			detail: "the log has a record past its head, so no write can be appended; an operator must run `tunnelplane verify` and remove it", internal: true}
	case errors.Is(err, eventstore.ErrUnavailable), errors.Is(err, eventstore.ErrClosed), errors.Is(err, eventstore.ErrOutcomeUnknown),
		errors.Is(err, commands.ErrNoTokenKey), errors.Is(err, commands.ErrNoEraser), errors.Is(err, eventstore.ErrSeal), errors.Is(err, oidcauth.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return classified{status: http.StatusServiceUnavailable, slug: "unavailable",
			detail: "the control plane cannot serve this request right now; retry later", internal: true}
	case errors.As(err, &he):
		msg := fmt.Sprint(he.Message)
		return classified{status: he.Code, slug: strings.ReplaceAll(strings.ToLower(http.StatusText(he.Code)), " ", "-"), detail: msg}
	default:
		return classified{status: http.StatusInternalServerError, slug: "internal", detail: "internal error", internal: true}
	}
}

// handleError is the echo HTTPErrorHandler: every error of every request is answered here, as
// application/problem+json.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	cl := classify(err)
	ids := requestIDsFrom(c)
	if cl.internal {
		s.log.Error("request failed", "error", err, "status", cl.status, "method", c.Request().Method, "path", c.Path(),
			"request_id", ids.request, "correlation_id", ids.correlation)
	}
	p := Problem{Type: ProblemTypeBase + cl.slug, Title: http.StatusText(cl.status), Status: cl.status, Detail: cl.detail,
		Instance: c.Request().URL.Path, RequestID: ids.request, CorrelationID: ids.correlation, Errors: cl.fields}
	h := c.Response().Header()
	switch cl.status {
	case http.StatusUnauthorized:
		v := `Bearer realm="tunnelplane"`
		var ae *authError
		if errors.As(err, &ae) && ae.code != "" {
			v += fmt.Sprintf(`, error=%q, error_description=%q`, ae.code, strings.ReplaceAll(ae.detail, `"`, "'"))
		}
		h.Set(echo.HeaderWWWAuthenticate, v)
	case http.StatusServiceUnavailable:
		h.Set(echo.HeaderRetryAfter, "1")
	case http.StatusTooManyRequests:
		h.Set(echo.HeaderRetryAfter, "30")
	}
	var inProgress *commands.InProgressError
	if errors.As(err, &inProgress) {
		// Whole seconds, rounded up: a retry then finds the outcome or takes the claim over.
		h.Set(echo.HeaderRetryAfter, strconv.FormatInt(max(1, int64(math.Ceil(inProgress.RetryAfter.Seconds()))), 10))
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(cl.status)
		return
	}
	body, merr := json.Marshal(p)
	if merr != nil {
		body = []byte(`{"type":"` + ProblemTypeBase + `internal","title":"Internal Server Error","status":500}`)
	}
	if werr := c.Blob(cl.status, "application/problem+json", body); werr != nil {
		s.log.Debug("problem response not written", "error", werr, "request_id", ids.request)
	}
}

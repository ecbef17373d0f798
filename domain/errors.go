package domain

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Match them with errors.Is.
var (
	// ErrValidation: the input breaks a rule; the concrete error is a *ValidationError.
	ErrValidation = errors.New("validation failed")
	// ErrInvalidState: the aggregate's state forbids the change (a deleted tunnel, a revoked token).
	ErrInvalidState = errors.New("not allowed in the current state")
	// ErrNotFound: the aggregate does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the change collides with another (a name in use, a concurrent write).
	ErrConflict = errors.New("conflict")
	// ErrUnknownEvent: an aggregate was given an event type it does not know.
	ErrUnknownEvent = errors.New("unknown event for this aggregate")
	// ErrInvalidFact: a node's fact breaks the rules of its type (counts, sizes, kinds).
	ErrInvalidFact = errors.New("invalid fact")
)

// FieldError is one problem with one input field.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// ValidationError lists every problem with an input.
type ValidationError struct {
	Fields []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Field + ": " + f.Message
	}
	return fmt.Sprintf("%s: %s", ErrValidation, strings.Join(parts, "; "))
}

// Is makes errors.Is(err, ErrValidation) hold.
func (e *ValidationError) Is(target error) bool { return target == ErrValidation }

// problems collects field errors.
type problems []FieldError

func (p *problems) add(field, format string, args ...any) {
	*p = append(*p, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return &ValidationError{Fields: p}
}

// ProblemTypeBase prefixes the type URI of every RFC 9457 problem tunnelplane answers with, from
// the admin API and from a node's ingress alike: urn:tunnelplane:problem:<slug>.
const ProblemTypeBase = "urn:tunnelplane:problem:"

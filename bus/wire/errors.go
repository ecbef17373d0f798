package wire

import "errors"

// Sentinel errors of the wire formats. Match them with errors.Is.
var (
	// ErrMalformed: bytes from the network or from the spool are not a valid message of the
	// documented format.
	ErrMalformed = errors.New("malformed bus message")
	// ErrInvalidCommand: a command is missing its id or its target.
	ErrInvalidCommand = errors.New("invalid command")
)

package commands

import (
	"context"
	"errors"
	"fmt"

	"github.com/tunnelplane/tunnelplane/domain"
)

// ObjSubjects: the personal data sealed for a subject (crypto-shredding). No organization role
// holds a right on it, so only superadmins erase: a subject's data spans every organization it
// acted in, and one organization's owner must not erase what another's audit trail holds.
const ObjSubjects = "subjects"

// ActErase on ObjSubjects: destroy a subject's data keys.
const ActErase = "erase"

// Eraser destroys a subject's data keys (*pii.Keyring).
type Eraser interface {
	Erase(ctx context.Context, subject string) (int64, error)
}

// ErrNoEraser: the service was built without a keyring, so it cannot erase.
var ErrNoEraser = errors.New("personal data erasure is not configured")

// EraseSubject destroys the data keys of a subject (an actor id: a user's id, "node:<id>" …) and
// appends subject.erased. The keys go first: an erasure whose record could not be appended is
// repeated (destroying nothing more), never recorded without having happened.
type EraseSubject struct {
	Subject string `json:"subject"`
	Reason  string `json:"reason,omitempty"`
}

func (EraseSubject) CommandName() string { return "EraseSubject" }
func (EraseSubject) Permission() Permission {
	return Permission{Org: domain.PlatformOrg, Object: ObjSubjects, Action: ActErase}
}

func (s *Service) eraseSubject(ctx context.Context, c EraseSubject) (Result, error) {
	if _, err := domain.EraseSubject(c.Subject, c.Reason, 0); err != nil {
		return Result{}, err
	}
	if s.cfg.Subjects == nil {
		return Result{}, ErrNoEraser
	}
	n, err := s.cfg.Subjects.Erase(ctx, c.Subject)
	if err != nil {
		return Result{}, fmt.Errorf("erase subject: %w", err)
	}
	ev, err := domain.EraseSubject(c.Subject, c.Reason, n)
	if err != nil {
		return Result{}, err
	}
	g := newIDGen(ctx, c.CommandName())
	meta := metadata(ctx, c.CommandName(), "", s.cfg.Now())
	return s.appendAtEnd(ctx, g, meta, c.Subject, domain.SubjectStream(c.Subject), ev)
}

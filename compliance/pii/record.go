package pii

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/tunnelplane/tunnelplane/compliance/pii/sealbox"
	"github.com/tunnelplane/tunnelplane/domain"
)

// The personal fields sealed in the log: in every record's metadata, and in the payloads of the
// types listed in payloadFields. Node facts are signed by nodes, which hold no data keys: a node
// seals agent.connected's remote_addr itself, to the sealing key of the agent token's issuer
// (sealbox, enc:x1), and the keyring opens it like the others (docs/security.md).
const (
	FieldClientIP   = "client_ip"
	FieldUserAgent  = "user_agent"
	FieldRemoteAddr = "remote_addr"
)

var metadataFields = []string{FieldClientIP, FieldUserAgent}

var payloadFields = map[string][]string{
	domain.TypeAuthFailed: {FieldRemoteAddr, FieldUserAgent},
}

// Fields are every personal field name sealed anywhere (a value found in text is tried with each).
func Fields() []string { return []string{FieldClientIP, FieldUserAgent, FieldRemoteAddr} }

// SubjectOf is whom a record's personal data is about: the metadata's actor (a user id, a token's
// "token:<id>", "node:<id>", "enrollment-token:<id>" …), Anonymous when it names none.
func SubjectOf(md domain.Metadata) string {
	if md.Actor == "" {
		return Anonymous
	}
	return md.Actor
}

// SealEvent is the store's Seal hook (eventstore.Config.Seal): it seals the personal fields of an
// event's metadata and payload with the data key of the metadata's actor. Events without any are
// returned as they are, byte for byte.
func (k *Keyring) SealEvent(ctx context.Context, eventType string, payload, metadata []byte) ([]byte, []byte, error) {
	pf := payloadFields[eventType]
	if len(pf) == 0 && !bytes.Contains(metadata, []byte(`"client_ip"`)) && !bytes.Contains(metadata, []byte(`"user_agent"`)) {
		return payload, metadata, nil
	}
	var md map[string]json.RawMessage
	if len(metadata) > 0 {
		if err := json.Unmarshal(metadata, &md); err != nil {
			return nil, nil, fmt.Errorf("pii: metadata: %w", err)
		}
	}
	var actor string
	if raw, ok := md["actor"]; ok {
		_ = json.Unmarshal(raw, &actor)
	}
	subject := SubjectOf(domain.Metadata{Actor: actor})
	meta, err := k.sealMembers(ctx, subject, metadata, md, metadataFields)
	if err != nil {
		return nil, nil, err
	}
	if len(pf) > 0 && len(payload) > 0 {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(payload, &obj); err != nil {
			return nil, nil, fmt.Errorf("pii: payload: %w", err)
		}
		if payload, err = k.sealMembers(ctx, subject, payload, obj, pf); err != nil {
			return nil, nil, err
		}
	}
	return payload, meta, nil
}

// sealMembers seals the string members fields of obj (the JSON object raw, decoded). Other
// members keep their bytes; the object is written again (keys in order) only when something was
// sealed, else raw is returned.
func (k *Keyring) sealMembers(ctx context.Context, subject string, raw []byte, obj map[string]json.RawMessage, fields []string) ([]byte, error) {
	changed := false
	for _, f := range fields {
		v, ok := obj[f]
		if !ok {
			continue
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil || s == "" || IsSealed(s) {
			continue
		}
		sealed, err := k.Seal(ctx, subject, f, s)
		if err != nil {
			return nil, err
		}
		obj[f], _ = json.Marshal(sealed)
		changed = true
	}
	if !changed {
		return raw, nil
	}
	return json.Marshal(obj)
}

// IsSealed tells whether s is a sealed value.
func IsSealed(s string) bool { _, ok := Parse(s); return ok }

// OpenMetadata replaces md's sealed fields by their plaintext (or Erased, Unreadable).
func (k *Keyring) OpenMetadata(ctx context.Context, md *domain.Metadata) error {
	var err error
	if md.ClientIP, err = k.Show(ctx, FieldClientIP, md.ClientIP); err != nil {
		return err
	}
	md.UserAgent, err = k.Show(ctx, FieldUserAgent, md.UserAgent)
	return err
}

// OpenEvent replaces the sealed fields of a decoded domain event by their plaintext.
func (k *Keyring) OpenEvent(ctx context.Context, ev any) error {
	var err error
	if e, ok := ev.(*domain.AuthFailed); ok {
		if e.RemoteAddr, err = k.Show(ctx, FieldRemoteAddr, e.RemoteAddr); err != nil {
			return err
		}
		e.UserAgent, err = k.Show(ctx, FieldUserAgent, e.UserAgent)
	}
	if e, ok := ev.(*domain.AgentConnected); ok {
		e.RemoteAddr, err = k.Show(ctx, FieldRemoteAddr, e.RemoteAddr)
	}
	return err
}

var sealedInText = regexp.MustCompile(`enc:[vx]1:[A-Za-z0-9_-]+:[0-9]+:[A-Za-z0-9_-]+`)

// OpenText replaces every sealed value inside free text (a report's cell built from a sealed
// field) by its plaintext. Which field a value belongs to is unknown there, so each personal
// field is tried; a value that opens under none shows Unreadable.
func (k *Keyring) OpenText(ctx context.Context, text string) (string, error) {
	if !strings.Contains(text, Prefix) && !strings.Contains(text, sealbox.Prefix) {
		return text, nil
	}
	var firstErr error
	out := sealedInText.ReplaceAllStringFunc(text, func(v string) string {
		for _, f := range Fields() {
			plain, err := k.Open(ctx, f, v)
			if err == nil {
				return plain
			}
			if !errors.Is(err, ErrUnreadable) {
				firstErr = err
				return v
			}
		}
		return Unreadable
	})
	return out, firstErr
}

package evidence

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

// FilePersonal opens, for the auditor, the personal data the window's records hold sealed
// (compliance/pii): one item per sealed value, its plaintext or "[erased]". The records keep the
// sealed values their hashes cover; this file is listed (with its SHA-256) in the signed manifest
// when present, and a bundle made without a keyring has none. A bundle shows what could be
// opened when it was made: erasing a subject later does not reach bundles already handed out.
const FilePersonal = "personal.json"

// PersonalOpener opens a sealed personal field (a *pii.Keyring).
type PersonalOpener interface {
	Show(ctx context.Context, field, value string) (string, error)
}

// PersonalValue is one opened value of FilePersonal.
type PersonalValue struct {
	Position uint64 `json:"position"`
	// In is "metadata" or "payload".
	In    string `json:"in"`
	Field string `json:"field"`
	// Value is the plaintext, "[erased]" once its subject was erased, or "[unreadable]".
	Value string `json:"value"`
}

// sealedPrefix starts a sealed value (pii.Prefix), nodeSealedPrefix one a node sealed to a public
// key (sealbox.Prefix).
const (
	sealedPrefix     = "enc:v1:"
	nodeSealedPrefix = "enc:x1:"
)

// openPersonal lists the window's sealed values opened.
func openPersonal(ctx context.Context, o PersonalOpener, pos uint64, rec *ledger.Record, out []PersonalValue) ([]PersonalValue, error) {
	scan := func(in string, raw []byte, fields ...string) error {
		var obj map[string]json.RawMessage
		if len(raw) == 0 || json.Unmarshal(raw, &obj) != nil {
			return nil
		}
		for _, f := range fields {
			var s string
			if json.Unmarshal(obj[f], &s) != nil || !strings.HasPrefix(s, sealedPrefix) && !strings.HasPrefix(s, nodeSealedPrefix) {
				continue
			}
			v, err := o.Show(ctx, f, s)
			if err != nil {
				return fmt.Errorf("export: open personal data at position %d: %w", pos, err)
			}
			out = append(out, PersonalValue{Position: pos, In: in, Field: f, Value: v})
		}
		return nil
	}
	if err := scan("metadata", rec.Metadata, "client_ip", "user_agent"); err != nil {
		return nil, err
	}
	switch rec.Type {
	case domain.TypeAuthFailed:
		if err := scan("payload", rec.StoredPayload, "remote_addr", "user_agent"); err != nil {
			return nil, err
		}
	case domain.TypeAgentConnected:
		if err := scan("payload", rec.StoredPayload, "remote_addr"); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// checkPersonalFile checks FilePersonal against the manifest: the file is optional, but when
// either the file or the manifest names it, both must agree.
func checkPersonalFile(files map[string][]byte, m *Manifest, rep *Report) {
	want, listed := m.Files[FilePersonal]
	if _, present := files[FilePersonal]; !listed && !present {
		return
	}
	if got := sha256Hex(files[FilePersonal]); !listed || got != want {
		rep.add(nil, FilePersonal, "file_hash_mismatch", "SHA-256 %s, the manifest says %q (the file was changed or added)", got, want)
	}
}

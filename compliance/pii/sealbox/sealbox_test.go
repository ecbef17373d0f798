package sealbox_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/tunnelplane/tunnelplane/compliance/pii/sealbox"
)

func TestSealOpensOnlyWithItsKeySubjectFieldAndGeneration(t *testing.T) {
	priv, pub, err := sealbox.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _, _ := sealbox.GenerateKey()
	v, err := sealbox.Seal(pub, "alice", 2, "remote_addr", "192.0.2.10:5555")
	if err != nil || strings.Contains(v, "192.0.2.10") {
		t.Fatalf("seal = %q, %v", v, err)
	}
	if again, _ := sealbox.Seal(pub, "alice", 2, "remote_addr", "192.0.2.10:5555"); again == v {
		t.Fatal("sealing is not randomized")
	}
	s, ok := sealbox.Parse(v)
	if !ok || s.Subject != "alice" || s.Generation != 2 {
		t.Fatalf("parse = %+v, %v", s, ok)
	}
	if got, err := sealbox.Open(priv, s, "remote_addr"); err != nil || got != "192.0.2.10:5555" {
		t.Fatalf("open = %q, %v", got, err)
	}
	if _, err := sealbox.Open(other, s, "remote_addr"); !errors.Is(err, sealbox.ErrUnreadable) {
		t.Fatalf("opened with another key: %v", err)
	}
	if _, err := sealbox.Open(priv, s, "user_agent"); !errors.Is(err, sealbox.ErrUnreadable) {
		t.Fatalf("opened as another field: %v", err)
	}
	for _, moved := range []sealbox.Sealed{{Subject: "bob", Generation: 2}, {Subject: "alice", Generation: 3}} {
		mv, _ := sealbox.Parse(strings.Replace(strings.Replace(v, ":2:", ":3:", moved.Generation-2),
			"YWxpY2U", map[string]string{"alice": "YWxpY2U", "bob": "Ym9i"}[moved.Subject], 1))
		if _, err := sealbox.Open(priv, mv, "remote_addr"); !errors.Is(err, sealbox.ErrUnreadable) {
			t.Fatalf("opened when moved to %+v: %v", moved, err)
		}
	}
	if got, _ := sealbox.Seal(pub, "alice", 2, "remote_addr", ""); got != "" {
		t.Fatalf("an empty value sealed to %q", got)
	}
	if _, err := sealbox.Seal(pub[:5], "alice", 2, "remote_addr", "x"); err == nil {
		t.Fatal("sealed to a short key")
	}
}

// Parse and Open take values from the log (written by nodes): any string is refused or opened,
// never a panic.
func FuzzParseOpen(f *testing.F) {
	priv, pub, _ := sealbox.GenerateKey()
	v, _ := sealbox.Seal(pub, "alice", 1, "remote_addr", "192.0.2.10:5555")
	f.Add(v)
	f.Add(v[:len(v)-10])
	f.Add("enc:x1:YWxpY2U:1:")
	f.Add("enc:x1:::")
	f.Fuzz(func(t *testing.T, s string) {
		if p, ok := sealbox.Parse(s); ok {
			_, _ = sealbox.Open(priv, p, "remote_addr")
		}
	})
}

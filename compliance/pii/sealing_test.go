package pii_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/tunnelplane/tunnelplane/compliance/pii"
	"github.com/tunnelplane/tunnelplane/compliance/pii/sealbox"
	"github.com/tunnelplane/tunnelplane/domain"
)

// A node seals to a subject's public sealing key; the keyring opens it with the private half, not
// once moved to another subject, field or generation, and shows [erased] after the subject's
// erasure (which counts the sealing key among the keys destroyed).
func TestSealingKeyOpensOnlyWhereSealedAndErases(t *testing.T) {
	t.Parallel()
	k, _ := newKeyring(t, 0)
	ctx := ctxT(t)
	pub, gen, err := k.SealingKey(ctx, "user-1")
	if err != nil || len(pub) != sealbox.KeySize || gen != 1 {
		t.Fatalf("sealing key = %x, %d, %v", pub, gen, err)
	}
	if again, gen2, err := k.SealingKey(ctx, "user-1"); err != nil || !bytes.Equal(again, pub) || gen2 != gen {
		t.Fatalf("second call made another key: %x gen %d, %v", again, gen2, err)
	}
	pub2, _, err := k.SealingKey(ctx, "user-2")
	if err != nil || bytes.Equal(pub2, pub) {
		t.Fatalf("user-2's key = %x, %v", pub2, err)
	}
	const addr = "198.51.100.23:40022"
	v, err := sealbox.Seal(pub, "user-1", gen, pii.FieldRemoteAddr, addr)
	if err != nil || !strings.HasPrefix(v, sealbox.Prefix) || strings.Contains(v, "198.51.100.23") {
		t.Fatalf("sealed = %q, %v", v, err)
	}
	if got, err := k.Open(ctx, pii.FieldRemoteAddr, v); err != nil || got != addr {
		t.Fatalf("open = %q, %v", got, err)
	}
	ev := &domain.AgentConnected{RemoteAddr: v}
	if err := k.OpenEvent(ctx, ev); err != nil || ev.RemoteAddr != addr {
		t.Fatalf("open event = %q, %v", ev.RemoteAddr, err)
	}
	if got, err := k.OpenText(ctx, "from "+v+" ok"); err != nil || got != "from "+addr+" ok" {
		t.Fatalf("open text = %q, %v", got, err)
	}
	// Moved: another field; sealed to user-2's key but naming user-1; another generation.
	if _, err := k.Open(ctx, pii.FieldUserAgent, v); !errors.Is(err, pii.ErrUnreadable) {
		t.Fatalf("opened under another field: %v", err)
	}
	wrongKey, _ := sealbox.Seal(pub2, "user-1", gen, pii.FieldRemoteAddr, addr)
	if _, err := k.Open(ctx, pii.FieldRemoteAddr, wrongKey); !errors.Is(err, pii.ErrUnreadable) {
		t.Fatalf("opened a value sealed to another subject's key: %v", err)
	}
	s, _ := sealbox.Parse(v)
	moved := strings.Replace(v, ":1:", ":2:", 1)
	if _, err := k.Open(ctx, pii.FieldRemoteAddr, moved); !errors.Is(err, pii.ErrUnreadable) || s.Generation != 1 {
		t.Fatalf("opened under another generation: %v", err)
	}
	if _, err := k.Open(ctx, pii.FieldRemoteAddr, sealbox.Prefix+"garbage"); !errors.Is(err, pii.ErrUnreadable) {
		t.Fatalf("malformed: %v", err)
	}
	if shown, err := k.Show(ctx, pii.FieldRemoteAddr, wrongKey); err != nil || shown != pii.Unreadable {
		t.Fatalf("show = %q, %v", shown, err)
	}

	// A data key too, so the erasure counts both kinds.
	mustSeal(t, k, "user-1", pii.FieldClientIP, "198.51.100.7")
	n, err := k.Erase(ctx, "user-1")
	if err != nil || n != 2 {
		t.Fatalf("erase = %d, %v; want 2 keys destroyed (data key and sealing key)", n, err)
	}
	if got, err := k.Open(ctx, pii.FieldRemoteAddr, v); err != nil || got != pii.Erased {
		t.Fatalf("after erasure open = %q, %v", got, err)
	}
	// The next token of the subject gets a new pair.
	if pub3, gen3, err := k.SealingKey(ctx, "user-1"); err != nil || gen3 != 2 || bytes.Equal(pub3, pub) {
		t.Fatalf("after erasure sealing key = %x gen %d, %v", pub3, gen3, err)
	}
	if got, err := k.Open(ctx, pii.FieldRemoteAddr, v); err != nil || got != pii.Erased {
		t.Fatalf("the old value after a new pair = %q, %v", got, err)
	}
}

package pii_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tunnelplane/tunnelplane/compliance/pii"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
}

func newKeyring(t *testing.T, cacheSize int) (*pii.Keyring, string) {
	return newKeyringTB(t, cacheSize)
}

func newKeyringB(b *testing.B) (*pii.Keyring, string) { return newKeyringTB(b, 0) }

func newKeyringTB(t testing.TB, cacheSize int) (*pii.Keyring, string) {
	t.Helper()
	u := pgtest.NewDatabase(t)
	kek, err := pii.NewFileKEK(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	k, err := pii.New(pii.Config{Pool: pgtest.Pool(t, u), KEK: kek, CacheSize: cacheSize})
	if err != nil {
		t.Fatal(err)
	}
	return k, u
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustSeal(t *testing.T, k *pii.Keyring, subject, field, plain string) string {
	t.Helper()
	v, err := k.Seal(ctxT(t), subject, field, plain)
	if err != nil {
		t.Fatal(err)
	}
	if !pii.IsSealed(v) || strings.Contains(v, plain) {
		t.Fatalf("sealed %q is %q", plain, v)
	}
	return v
}

func TestSealOpenEraseAndSealAgain(t *testing.T) {
	t.Parallel()
	k, _ := newKeyring(t, 0)
	ctx := ctxT(t)
	v := mustSeal(t, k, "user-1", pii.FieldClientIP, "198.51.100.7")
	other := mustSeal(t, k, "user-2", pii.FieldClientIP, "203.0.113.9")
	if got, err := k.Open(ctx, pii.FieldClientIP, v); err != nil || got != "198.51.100.7" {
		t.Fatalf("open = %q, %v", got, err)
	}
	// Sealing is deterministic per subject, field and key: the read models can group by it.
	if again := mustSeal(t, k, "user-1", pii.FieldClientIP, "198.51.100.7"); again != v {
		t.Fatalf("the same value sealed twice: %q, %q", v, again)
	}
	if ua := mustSeal(t, k, "user-1", pii.FieldUserAgent, "198.51.100.7"); ua == v {
		t.Fatal("the same value in another field seals to the same string")
	}
	n, err := k.Erase(ctx, "user-1")
	if err != nil || n != 1 {
		t.Fatalf("erase = %d, %v; want 1 key destroyed", n, err)
	}
	if got, err := k.Open(ctx, pii.FieldClientIP, v); err != nil || got != pii.Erased {
		t.Fatalf("after erasure open = %q, %v; want %q", got, err, pii.Erased)
	}
	if got, _ := k.Open(ctx, pii.FieldClientIP, other); got != "203.0.113.9" {
		t.Fatalf("another subject's value = %q after erasing user-1", got)
	}
	if n, err := k.Erase(ctx, "user-1"); err != nil || n != 0 {
		t.Fatalf("second erase = %d, %v; want 0", n, err)
	}
	// The subject acts again: a new key, which the old erasure does not touch.
	again := mustSeal(t, k, "user-1", pii.FieldClientIP, "198.51.100.8")
	if s, _ := pii.Parse(again); s.Generation != 2 {
		t.Fatalf("new value sealed with generation %d, want 2", s.Generation)
	}
	if got, _ := k.Open(ctx, pii.FieldClientIP, again); got != "198.51.100.8" {
		t.Fatalf("new value opens as %q", got)
	}
	if got, _ := k.Open(ctx, pii.FieldClientIP, v); got != pii.Erased {
		t.Fatalf("old value opens as %q after a new key", got)
	}
	// A plaintext (records before sealing existed) reads as it is.
	if got, _ := k.Open(ctx, pii.FieldClientIP, "192.0.2.1"); got != "192.0.2.1" {
		t.Fatalf("plaintext reads as %q", got)
	}
}

// A sealed value moved to another subject or another field, or given another generation, does
// not open.
func TestMovedCiphertextDoesNotOpen(t *testing.T) {
	t.Parallel()
	k, _ := newKeyring(t, 0)
	ctx := ctxT(t)
	v := mustSeal(t, k, "alice", pii.FieldUserAgent, "curl/8.4 alice-laptop")
	mustSeal(t, k, "bob", pii.FieldUserAgent, "bob's agent") // bob has a key
	if _, err := k.Open(ctx, pii.FieldClientIP, v); !errors.Is(err, pii.ErrUnreadable) {
		t.Fatalf("moved to another field: %v, want ErrUnreadable", err)
	}
	parts := strings.Split(strings.TrimPrefix(v, pii.Prefix), ":")
	bob := pii.Prefix + base64.RawURLEncoding.EncodeToString([]byte("bob")) + ":" + parts[1] + ":" + parts[2]
	if _, err := k.Open(ctx, pii.FieldUserAgent, bob); !errors.Is(err, pii.ErrUnreadable) {
		t.Fatalf("moved to another subject: %v, want ErrUnreadable", err)
	}
	gen2 := pii.Prefix + parts[0] + ":2:" + parts[2]
	if _, err := k.Open(ctx, pii.FieldUserAgent, gen2); !errors.Is(err, pii.ErrUnreadable) {
		t.Fatalf("another generation: %v, want ErrUnreadable", err)
	}
	if got, _ := k.Show(ctx, pii.FieldClientIP, v); got != pii.Unreadable {
		t.Fatalf("Show of a moved value = %q", got)
	}
	if got, err := k.Open(ctx, pii.FieldUserAgent, v); err != nil || got != "curl/8.4 alice-laptop" {
		t.Fatalf("in place: %q, %v", got, err)
	}
}

// A keyring with another KEK cannot unwrap the data keys.
func TestAnotherKEKCannotOpen(t *testing.T) {
	t.Parallel()
	k, u := newKeyring(t, 0)
	v := mustSeal(t, k, "carol", pii.FieldClientIP, "192.0.2.55")
	kek, _ := pii.NewFileKEK(bytes.Repeat([]byte{8}, 32))
	other, err := pii.New(pii.Config{Pool: pgtest.Pool(t, u), KEK: kek})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Open(ctxT(t), pii.FieldClientIP, v); !errors.Is(err, pii.ErrKEK) {
		t.Fatalf("open with another KEK: %v, want ErrKEK", err)
	}
}

// SealEvent seals the metadata's address and user agent (and an auth.failed payload's) with the
// actor's key; the other members keep their values, and events without personal data keep their
// bytes.
func TestSealEvent(t *testing.T) {
	t.Parallel()
	k, _ := newKeyring(t, 0)
	ctx := ctxT(t)
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	meta, _ := json.Marshal(domain.Metadata{Actor: "user-9", OrgID: "org-1", ClientIP: "198.51.100.77", UserAgent: "pii-test-agent/1.0",
		CorrelationID: "c-1", OccurredAt: at})
	payload := []byte(`{"name":"x"}`)
	p, m, err := k.SealEvent(ctx, domain.TypeOrganizationCreated, payload, meta)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, payload) {
		t.Fatalf("payload without personal data changed: %s", p)
	}
	if bytes.Contains(m, []byte("198.51.100.77")) || bytes.Contains(m, []byte("pii-test-agent")) {
		t.Fatalf("metadata still holds plaintext: %s", m)
	}
	var md domain.Metadata
	if err := json.Unmarshal(m, &md); err != nil {
		t.Fatal(err)
	}
	if md.Actor != "user-9" || md.OrgID != "org-1" || md.CorrelationID != "c-1" || !md.OccurredAt.Equal(at) {
		t.Fatalf("other members changed: %+v", md)
	}
	if s, ok := pii.Parse(md.ClientIP); !ok || s.Subject != "user-9" {
		t.Fatalf("client_ip %q not sealed for the actor", md.ClientIP)
	}
	if err := k.OpenMetadata(ctx, &md); err != nil || md.ClientIP != "198.51.100.77" || md.UserAgent != "pii-test-agent/1.0" {
		t.Fatalf("opened metadata %+v, %v", md, err)
	}

	plain, _ := json.Marshal(domain.Metadata{Actor: "system:x", CorrelationID: "c"})
	if p2, m2, err := k.SealEvent(ctx, domain.TypeOrganizationCreated, payload, plain); err != nil || !bytes.Equal(m2, plain) || !bytes.Equal(p2, payload) {
		t.Fatalf("an event without personal data changed: %s %s %v", p2, m2, err)
	}

	af, _ := json.Marshal(domain.AuthFailed{Reason: "bad token", Subject: "claimed", RemoteAddr: "203.0.113.200", UserAgent: "scanner/2", Count: 3, At: at})
	afMeta, _ := json.Marshal(domain.Metadata{Actor: pii.Anonymous, ClientIP: "203.0.113.200", UserAgent: "scanner/2"})
	p, m, err = k.SealEvent(ctx, domain.TypeAuthFailed, af, afMeta)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(p, []byte("203.0.113.200")) || bytes.Contains(p, []byte("scanner/2")) || bytes.Contains(m, []byte("203.0.113.200")) {
		t.Fatalf("auth.failed still holds plaintext: %s %s", p, m)
	}
	ev, err := domain.Decode(domain.TypeAuthFailed, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.OpenEvent(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if e := ev.(*domain.AuthFailed); e.RemoteAddr != "203.0.113.200" || e.UserAgent != "scanner/2" || e.Subject != "claimed" || e.Count != 3 {
		t.Fatalf("opened auth.failed %+v", e)
	}
	text := "from " + ev.(*domain.AuthFailed).RemoteAddr
	var sealedAF domain.AuthFailed
	_ = json.Unmarshal(p, &sealedAF)
	if got, err := k.OpenText(ctx, "from "+sealedAF.RemoteAddr+" twice "+sealedAF.RemoteAddr); err != nil || got != text+" twice 203.0.113.200" {
		t.Fatalf("OpenText = %q, %v", got, err)
	}
}

// A subject id longer than the keys table takes (an external provider's) seals under its digest,
// and erasing it by the same id reaches it.
func TestLongSubject(t *testing.T) {
	t.Parallel()
	k, _ := newKeyring(t, 0)
	ctx := ctxT(t)
	long := strings.Repeat("x", pii.MaxSubjectBytes+1)
	v := mustSeal(t, k, long, pii.FieldClientIP, "192.0.2.9")
	if s, _ := pii.Parse(v); !strings.HasPrefix(s.Subject, "sha256:") {
		t.Fatalf("a long subject sealed as %q", s.Subject)
	}
	if n, err := k.Erase(ctx, long); err != nil || n != 1 {
		t.Fatalf("erase = %d, %v", n, err)
	}
	if got, _ := k.Open(ctx, pii.FieldClientIP, v); got != pii.Erased {
		t.Fatalf("after erasure: %q", got)
	}
}

// The cache of data keys stays within its bound however many subjects act.
func TestKeyCacheIsBounded(t *testing.T) {
	t.Parallel()
	k, _ := newKeyring(t, 4)
	for i := range 20 {
		mustSeal(t, k, "subject-"+string(rune('a'+i)), pii.FieldClientIP, "192.0.2.1")
	}
	if n := k.CachedKeys(); n > 4 {
		t.Fatalf("%d keys cached, bound 4", n)
	}
}

package pii

import (
	"context"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelplane/tunnelplane/compliance/pii/sealbox"
)

// Erased is what readers show for a value whose subject was erased.
const Erased = "[erased]"

// Unreadable is what readers show for a sealed value that does not open (changed, moved to
// another subject or field, or sealed by another installation).
const Unreadable = "[unreadable]"

// Prefix starts every sealed value.
const Prefix = "enc:v1:"

// Anonymous is the subject of personal data no authenticated actor is named for (failed
// authentications: the subject they claimed is unverified, and outside input must not add rows
// to the keys table).
const Anonymous = "anonymous"

// Sentinel errors.
var (
	// ErrUnreadable: a sealed value does not open (see Unreadable).
	ErrUnreadable = errors.New("pii: the sealed value does not open")
	// ErrNoKey: no data key of that subject and generation exists (it never did, here).
	ErrNoKey = errors.New("pii: no such data key")
	// ErrNoSubject: an erasure named no subject.
	ErrNoSubject = errors.New("pii: no subject named")
)

// Limits.
const (
	// MaxSubjectBytes bounds a subject (an actor id).
	MaxSubjectBytes = 256
	// DefaultCacheSize bounds the data keys a keyring holds in memory.
	DefaultCacheSize = 10_000
	// DefaultCacheTTL is how long a keyring trusts a cached key: an erasure by another control
	// plane reaches this one's cache within it.
	DefaultCacheTTL = 30 * time.Second
)

// Config configures a Keyring.
type Config struct {
	Pool *pgxpool.Pool
	KEK  KEK
	// CacheSize bounds the cached data keys (DefaultCacheSize when 0).
	CacheSize int
	// CacheTTL bounds how long a cached key is used (DefaultCacheTTL when 0).
	CacheTTL time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Pool == nil {
		errs = append(errs, errors.New("pii config: Pool is required"))
	}
	if c.KEK == nil {
		errs = append(errs, errors.New("pii config: KEK is required"))
	}
	if c.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("pii config: CacheSize %d is negative", c.CacheSize))
	}
	if c.CacheTTL < 0 {
		errs = append(errs, fmt.Errorf("pii config: CacheTTL %s is negative", c.CacheTTL))
	}
	return errors.Join(errs...)
}

// Keyring holds the subjects' data keys: it makes them, caches them (bounded, for CacheTTL),
// seals and opens values with them, and destroys them.
type Keyring struct {
	cfg Config

	mu      sync.Mutex
	keys    map[keyRef]cachedKey // (subject, generation) → key, or erased
	current map[string]cachedGen // subject → generation new values are sealed with
}

type keyRef struct {
	subject    string
	generation int
}

type cachedKey struct {
	key     *dataKey // nil: erased
	expires time.Time
}

// dataKey is a subject's key: AES-256-GCM, with nonces derived from the value (a synthetic IV:
// HMAC-SHA256 under a key derived from the data key, over the associated data and the
// plaintext). The same value of the same subject and field seals to the same string, so the
// read models can still group by it (failed logins from one address); a nonce repeats only
// with its plaintext, which GCM allows.
type dataKey struct {
	aead     cipher.AEAD
	nonceKey []byte
	sealing  []byte // instead, a private sealing key (X25519; sealing.go)
}

func newDataKey(raw []byte) (*dataKey, error) {
	aead, err := newAEAD(raw)
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, raw)
	m.Write([]byte("tunnelplane pii nonce key v1"))
	return &dataKey{aead: aead, nonceKey: m.Sum(nil)}, nil
}

// seal returns nonce ‖ ciphertext, the nonce derived from aad and plain.
func (k *dataKey) seal(plain, aad []byte) []byte {
	m := hmac.New(sha256.New, k.nonceKey)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(aad)))
	m.Write(n[:])
	m.Write(aad)
	m.Write(plain)
	nonce := m.Sum(nil)[:k.aead.NonceSize()]
	return k.aead.Seal(nonce, nonce, plain, aad)
}

type cachedGen struct {
	generation int
	expires    time.Time
}

// New builds a Keyring.
func New(cfg Config) (*Keyring, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Keyring{cfg: cfg, keys: map[keyRef]cachedKey{}, current: map[string]cachedGen{}}, nil
}

// Seal returns plain sealed for subject's field. An empty plain stays empty.
func (k *Keyring) Seal(ctx context.Context, subject, field, plain string) (string, error) {
	if plain == "" || strings.HasPrefix(plain, Prefix) {
		return plain, nil
	}
	if subject == "" {
		subject = Anonymous
	}
	subject = keyedSubject(subject)
	gen, dk, err := k.liveKey(ctx, subject)
	if err != nil {
		return "", err
	}
	ct := dk.seal([]byte(plain), fieldAAD(subject, field, gen))
	return sealbox.Join(Prefix, subject, gen, ct), nil
}

// Sealed is a parsed sealed value.
type Sealed struct {
	Subject    string
	Generation int
	ct         []byte
}

// Parse parses a sealed value; ok is false for anything else (a plaintext of older records).
func Parse(value string) (s Sealed, ok bool) {
	sub, gen, ct, ok := sealbox.Split(value, Prefix)
	return Sealed{Subject: sub, Generation: gen, ct: ct}, ok
}

// Open returns the plaintext of field's value: the value itself when it is not sealed, Erased
// when its subject's key was destroyed, and an error wrapping ErrUnreadable when it does not open.
func (k *Keyring) Open(ctx context.Context, field, value string) (string, error) {
	if strings.HasPrefix(value, sealbox.Prefix) {
		return k.openSealed(ctx, field, value)
	}
	s, ok := Parse(value)
	if !ok {
		if strings.HasPrefix(value, Prefix) {
			return "", fmt.Errorf("%w: %s is malformed", ErrUnreadable, field)
		}
		return value, nil
	}
	dk, err := k.keyOf(ctx, s.Subject, s.Generation)
	switch {
	case errors.Is(err, ErrNoKey):
		return "", fmt.Errorf("%w: %s: %w", ErrUnreadable, field, err)
	case err != nil:
		return "", err
	case dk == nil:
		return Erased, nil
	}
	plain, err := open(dk.aead, s.ct, fieldAAD(s.Subject, field, s.Generation))
	if err != nil {
		return "", fmt.Errorf("%w: %s was not sealed for this subject and field", ErrUnreadable, field)
	}
	return string(plain), nil
}

// Show is Open for display: Unreadable instead of an error that is not the database's.
func (k *Keyring) Show(ctx context.Context, field, value string) (string, error) {
	v, err := k.Open(ctx, field, value)
	if errors.Is(err, ErrUnreadable) {
		return Unreadable, nil
	}
	return v, err
}

// Erase destroys every data key and private sealing key of subject, so nothing sealed for it
// opens again, and reports how many keys it destroyed (0 when the subject had none, or was erased
// before). A later value of the subject is sealed with a new key.
func (k *Keyring) Erase(ctx context.Context, subject string) (int64, error) {
	if subject == "" {
		return 0, ErrNoSubject
	}
	subject = keyedSubject(subject)
	var n int64
	err := pgx.BeginFunc(ctx, k.cfg.Pool, func(tx pgx.Tx) error {
		for _, table := range []string{"subject_keys", "subject_sealing_keys"} {
			tag, err := tx.Exec(ctx, `UPDATE `+table+` SET wrapped_key = NULL, erased_at = now()
				WHERE subject = $1 AND erased_at IS NULL`, subject)
			if err != nil {
				return err
			}
			n += tag.RowsAffected()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("pii: erase: %w", err)
	}
	k.mu.Lock()
	delete(k.current, subject)
	for ref := range k.keys {
		if ref.subject == subject {
			delete(k.keys, ref)
		}
	}
	k.mu.Unlock()
	return n, nil
}

// liveKey returns the key new values of subject are sealed with, making one if there is none.
func (k *Keyring) liveKey(ctx context.Context, subject string) (int, *dataKey, error) {
	now := k.cfg.Now()
	k.mu.Lock()
	if c, ok := k.current[subject]; ok && now.Before(c.expires) {
		if ck, ok := k.keys[keyRef{subject, c.generation}]; ok && ck.key != nil && now.Before(ck.expires) {
			k.mu.Unlock()
			return c.generation, ck.key, nil
		}
	}
	k.mu.Unlock()
	for range 3 { // a concurrent maker or eraser may win a round
		var gen int
		var wrapped []byte
		err := k.cfg.Pool.QueryRow(ctx, `SELECT generation, wrapped_key FROM subject_keys
			WHERE subject = $1 AND erased_at IS NULL ORDER BY generation DESC LIMIT 1`, subject).Scan(&gen, &wrapped)
		if errors.Is(err, pgx.ErrNoRows) {
			if err := k.makeKey(ctx, subject); err != nil {
				return 0, nil, err
			}
			continue
		}
		if err != nil {
			return 0, nil, fmt.Errorf("pii: data key of a subject: %w", err)
		}
		dk, err := k.unwrap(subject, gen, wrapped)
		if err != nil {
			return 0, nil, err
		}
		k.remember(keyRef{subject, gen}, dk, true)
		return gen, dk, nil
	}
	return 0, nil, errors.New("pii: no data key could be made for the subject (erased while being made)")
}

// makeKey inserts a new data key for subject, one generation past its newest; a concurrent
// maker's key wins, and this one is dropped.
func (k *Keyring) makeKey(ctx context.Context, subject string) error {
	var gen int
	if err := k.cfg.Pool.QueryRow(ctx, `SELECT coalesce(max(generation), 0) + 1 FROM subject_keys WHERE subject = $1`, subject).Scan(&gen); err != nil {
		return fmt.Errorf("pii: new data key: %w", err)
	}
	dk := make([]byte, 32)
	if _, err := rand.Read(dk); err != nil {
		return err
	}
	wrapped, err := k.cfg.KEK.Wrap(dk, wrapAAD(subject, gen))
	clear(dk)
	if err != nil {
		return fmt.Errorf("pii: wrap a data key: %w", err)
	}
	if _, err := k.cfg.Pool.Exec(ctx, `INSERT INTO subject_keys (subject, generation, wrapped_key, kek_id)
		VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`, subject, gen, wrapped, k.cfg.KEK.ID()); err != nil {
		return fmt.Errorf("pii: new data key: %w", err)
	}
	return nil
}

// keyOf returns the key of (subject, generation), nil when it was erased.
func (k *Keyring) keyOf(ctx context.Context, subject string, gen int) (*dataKey, error) {
	return k.lookup(ctx, keyRef{subject, gen}, `SELECT wrapped_key FROM subject_keys WHERE subject = $1 AND generation = $2`,
		func(wrapped []byte) (*dataKey, error) { return k.unwrap(subject, gen, wrapped) })
}

// lookup returns the cached key of ref, or reads its wrapped bytes with query (subject, |generation|)
// and opens them with unwrap; nil when it was erased, ErrNoKey when there is no such row.
func (k *Keyring) lookup(ctx context.Context, ref keyRef, query string, unwrap func(wrapped []byte) (*dataKey, error)) (*dataKey, error) {
	k.mu.Lock()
	if c, ok := k.keys[ref]; ok && k.cfg.Now().Before(c.expires) {
		k.mu.Unlock()
		return c.key, nil
	}
	k.mu.Unlock()
	var wrapped []byte
	err := k.cfg.Pool.QueryRow(ctx, query, ref.subject, max(ref.generation, -ref.generation)).Scan(&wrapped)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNoKey
	}
	if err != nil {
		return nil, fmt.Errorf("pii: key of a subject: %w", err)
	}
	var dk *dataKey
	if wrapped != nil {
		if dk, err = unwrap(wrapped); err != nil {
			return nil, err
		}
	}
	k.remember(ref, dk, false)
	return dk, nil
}

func (k *Keyring) unwrap(subject string, gen int, wrapped []byte) (*dataKey, error) {
	raw, err := k.cfg.KEK.Unwrap(wrapped, wrapAAD(subject, gen))
	if err != nil {
		return nil, err
	}
	defer clear(raw)
	return newDataKey(raw)
}

// remember caches a key (nil: erased); live also makes it the subject's current one. When the
// cache is full an arbitrary entry goes: the bound matters, not which.
func (k *Keyring) remember(ref keyRef, dk *dataKey, live bool) {
	exp := k.cfg.Now().Add(k.cfg.CacheTTL)
	k.mu.Lock()
	defer k.mu.Unlock()
	evict(k.keys, k.cfg.CacheSize)
	k.keys[ref] = cachedKey{key: dk, expires: exp}
	if live {
		evict(k.current, k.cfg.CacheSize)
		k.current[ref.subject] = cachedGen{generation: ref.generation, expires: exp}
	}
}

func evict[K comparable, V any](m map[K]V, size int) {
	for key := range m {
		if len(m) < size {
			return
		}
		delete(m, key)
	}
}

// CachedKeys is how many data keys the keyring holds in memory (for tests of the bound).
func (k *Keyring) CachedKeys() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.keys)
}

// keyedSubject is the subject as the keys table names it: itself, or for an id longer than
// MaxSubjectBytes (an external provider's subject may be) "sha256:" and its digest, so no actor
// fails to seal.
func keyedSubject(subject string) string {
	if len(subject) <= MaxSubjectBytes {
		return subject
	}
	sum := sha256.Sum256([]byte(subject))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func fieldAAD(subject, field string, gen int) []byte {
	return []byte("tunnelplane pii v1\x00" + subject + "\x00" + field + "\x00" + strconv.Itoa(gen))
}

func wrapAAD(subject string, gen int) []byte {
	return []byte("tunnelplane subject key v1\x00" + subject + "\x00" + strconv.Itoa(gen))
}

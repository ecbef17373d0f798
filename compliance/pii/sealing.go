package pii

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelplane/tunnelplane/compliance/pii/sealbox"
)

// SealingKey returns the public half of subject's sealing key pair and its generation, making a
// pair when the subject has none live (table subject_sealing_keys): what a node seals the
// subject's personal data to (sealbox). The private half never leaves the keyring.
func (k *Keyring) SealingKey(ctx context.Context, subject string) (pub []byte, gen int, err error) {
	if subject == "" {
		return nil, 0, ErrNoSubject
	}
	subject = keyedSubject(subject)
	for range 3 { // a concurrent maker or eraser may win a round
		err := k.cfg.Pool.QueryRow(ctx, `SELECT generation, public_key FROM subject_sealing_keys
			WHERE subject = $1 AND erased_at IS NULL ORDER BY generation DESC LIMIT 1`, subject).Scan(&gen, &pub)
		if errors.Is(err, pgx.ErrNoRows) {
			if err := k.makeSealingKey(ctx, subject); err != nil {
				return nil, 0, err
			}
			continue
		}
		if err != nil {
			return nil, 0, fmt.Errorf("pii: sealing key of a subject: %w", err)
		}
		return pub, gen, nil
	}
	return nil, 0, errors.New("pii: no sealing key could be made for the subject (erased while being made)")
}

func (k *Keyring) makeSealingKey(ctx context.Context, subject string) error {
	var gen int
	if err := k.cfg.Pool.QueryRow(ctx, `SELECT coalesce(max(generation), 0) + 1 FROM subject_sealing_keys WHERE subject = $1`, subject).Scan(&gen); err != nil {
		return fmt.Errorf("pii: new sealing key: %w", err)
	}
	priv, pub, err := sealbox.GenerateKey()
	if err != nil {
		return err
	}
	wrapped, err := k.cfg.KEK.Wrap(priv, sealingWrapAAD(subject, gen))
	clear(priv)
	if err != nil {
		return fmt.Errorf("pii: wrap a sealing key: %w", err)
	}
	if _, err := k.cfg.Pool.Exec(ctx, `INSERT INTO subject_sealing_keys (subject, generation, public_key, wrapped_key, kek_id)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, subject, gen, pub, wrapped, k.cfg.KEK.ID()); err != nil {
		return fmt.Errorf("pii: new sealing key: %w", err)
	}
	return nil
}

// openSealed opens a value a node sealed to a subject's public key (sealbox.Prefix).
func (k *Keyring) openSealed(ctx context.Context, field, value string) (string, error) {
	s, ok := sealbox.Parse(value)
	if !ok {
		return "", fmt.Errorf("%w: %s is malformed", ErrUnreadable, field)
	}
	priv, err := k.sealingPrivate(ctx, keyedSubject(s.Subject), s.Generation)
	switch {
	case errors.Is(err, ErrNoKey):
		return "", fmt.Errorf("%w: %s: %w", ErrUnreadable, field, err)
	case err != nil:
		return "", err
	case priv == nil:
		return Erased, nil
	}
	plain, err := sealbox.Open(priv, s, field)
	if err != nil {
		return "", fmt.Errorf("%w: %s was not sealed for this subject and field", ErrUnreadable, field)
	}
	return plain, nil
}

// sealingPrivate returns the private sealing key of (subject, generation), nil when it was erased.
// Cached like the data keys (same bound and lifetime), under a negative generation so the two
// kinds of keys never meet.
func (k *Keyring) sealingPrivate(ctx context.Context, subject string, gen int) ([]byte, error) {
	dk, err := k.lookup(ctx, keyRef{subject, -gen}, `SELECT wrapped_key FROM subject_sealing_keys WHERE subject = $1 AND generation = $2`,
		func(wrapped []byte) (*dataKey, error) {
			priv, err := k.cfg.KEK.Unwrap(wrapped, sealingWrapAAD(subject, gen))
			return &dataKey{sealing: priv}, err
		})
	if dk == nil || err != nil {
		return nil, err
	}
	return dk.sealing, nil
}

func sealingWrapAAD(subject string, gen int) []byte {
	return []byte("tunnelplane subject sealing key v1\x00" + subject + "\x00" + strconv.Itoa(gen))
}

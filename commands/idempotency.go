package commands

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// ErrInProgress: a request with the same Idempotency-Key is still being handled.
var ErrInProgress = errors.New("a request with this idempotency key is in progress")

// staleAfter is when an unfinished idempotency record is presumed abandoned by a crash.
const staleAfter = 10 * time.Minute

// idempotent makes a command with an Idempotency-Key run once per (actor, key): a repeat with the
// same request returns the first result and appends nothing; the same key with a different
// request is refused. Ids derived from the key make even a crash between the append and the
// record harmless: a re-run collides with its own events in the log instead of duplicating them.
func idempotent[C Command](s *Service, next Handler[C]) Handler[C] {
	return HandlerFunc[C](func(ctx context.Context, cmd C) (Result, error) {
		key := idempotencyKey(ctx)
		if key == "" {
			return next.Handle(ctx, cmd)
		}
		if len(key) > 255 {
			return Result{}, &domain.ValidationError{Fields: []domain.FieldError{{Field: "Idempotency-Key", Message: "is longer than 255 bytes"}}}
		}
		actor := ActorFrom(ctx).ID
		body, err := json.Marshal(cmd)
		if err != nil {
			return Result{}, err
		}
		sum := sha256.Sum256(append([]byte(cmd.CommandName()+"\x00"), body...))
		pool := s.cfg.Pool
		tag, err := pool.Exec(ctx, `INSERT INTO idempotency_keys (actor, key, command, request_hash, status, response)
			VALUES ($1, $2, $3, $4, 0, 'null') ON CONFLICT (actor, key) DO NOTHING`, actor, key, cmd.CommandName(), sum[:])
		if err != nil {
			return Result{}, fmt.Errorf("idempotency: %w", err)
		}
		if tag.RowsAffected() == 0 {
			var command string
			var hash []byte
			var status int
			var response []byte
			var created time.Time
			if err := pool.QueryRow(ctx, `SELECT command, request_hash, status, response, created_at FROM idempotency_keys WHERE actor = $1 AND key = $2`,
				actor, key).Scan(&command, &hash, &status, &response, &created); err != nil {
				return Result{}, fmt.Errorf("idempotency: %w", err)
			}
			if command != cmd.CommandName() || string(hash) != string(sum[:]) {
				return Result{}, fmt.Errorf("%w: the key %q was first used for another %s", ErrIdempotencyMismatch, key, command)
			}
			if status == 0 && time.Since(created) < staleAfter {
				return Result{}, ErrInProgress
			}
			if status != 0 {
				var res Result
				if err := json.Unmarshal(response, &res); err != nil {
					return Result{}, fmt.Errorf("idempotency: stored response: %w", err)
				}
				return s.replay(cmd, res)
			}
			// Stale and unfinished: run again; derived ids stop a duplicate.
		}
		res, err := next.Handle(ctx, cmd)
		cctx := context.WithoutCancel(ctx)
		if err != nil {
			if errors.Is(err, eventstore.ErrDuplicateEventID) {
				err = fmt.Errorf("%w: an earlier attempt with this idempotency key was interrupted after it was written; its events are in the log", domain.ErrConflict)
			}
			// Forget failures so that the client can fix the request and retry with the same key.
			_, _ = pool.Exec(cctx, `DELETE FROM idempotency_keys WHERE actor = $1 AND key = $2 AND status = 0`, actor, key)
			return Result{}, err
		}
		stored := res
		stored.Token = "" // a secret is never stored; a replay re-mints the same token
		b, _ := json.Marshal(stored)
		if _, err := pool.Exec(cctx, `UPDATE idempotency_keys SET status = 1, response = $3 WHERE actor = $1 AND key = $2`, actor, key, b); err != nil {
			s.log.Warn("idempotency record not saved; a retry will be refused as a duplicate", "error", err)
		}
		return res, nil
	})
}

// replay rebuilds a stored result; an agent token is minted again, byte for byte the same
// (Ed25519 is deterministic and the claims are the stored ones).
func (s *Service) replay(cmd Command, res Result) (Result, error) {
	c, ok := cmd.(IssueAgentToken)
	if !ok || res.ExpiresAt == nil || res.IssuedAt == nil {
		return res, nil
	}
	key := s.tokenKeyByID(res.KeyID)
	if key == nil {
		return Result{}, fmt.Errorf("%w: the token key that signed the first response (%s) is gone; issue a new token", ErrNoTokenKey, res.KeyID)
	}
	raw, err := token.MintAgent(key, s.cfg.TokenIssuer, res.ID, c.OrgID, c.TunnelID, *res.ExpiresAt, *res.IssuedAt)
	if err != nil {
		return Result{}, err
	}
	res.Token = raw
	return res, nil
}

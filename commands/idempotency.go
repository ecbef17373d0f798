package commands

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// ErrInProgress: a request with the same Idempotency-Key is still being handled. The error is an
// *InProgressError, which tells when to retry.
var ErrInProgress = errors.New("a request with this idempotency key is in progress")

// InProgressError is ErrInProgress with the time left on the running request's claim: a retry
// after it either finds the outcome or takes the claim over (its owner is gone).
type InProgressError struct {
	RetryAfter time.Duration
}

func (e *InProgressError) Error() string {
	return fmt.Sprintf("%s; retry in %s", ErrInProgress, e.RetryAfter.Round(time.Second))
}

// Is makes errors.Is(err, ErrInProgress) hold.
func (e *InProgressError) Is(target error) bool { return target == ErrInProgress }

// idempotencyLease is how long an unfinished idempotency claim holds without being renewed. Its
// owner renews it every third of that while the command runs, so only the claim of a process
// that is gone (crashed, killed, cut off from the database) expires, and a retry then takes it
// over: a client waits at most this long to learn an in-doubt outcome.
const idempotencyLease = 5 * time.Second

// errCrashed is what a command stopped by Service.crashHook returns (tests only).
var errCrashed = errors.New("simulated crash")

// claimSQL inserts a claim or takes over an expired one for the same request; it returns a row
// only when this process now owns the claim.
const claimSQL = `INSERT INTO idempotency_keys (actor, key, command, request_hash, status, response, owner, renewed_at)
	VALUES ($1, $2, $3, $4, 0, 'null', $5, now())
	ON CONFLICT (actor, key) DO UPDATE SET owner = EXCLUDED.owner, renewed_at = now(), created_at = now()
	WHERE idempotency_keys.status = 0 AND idempotency_keys.renewed_at < now() - $6::interval
		AND idempotency_keys.command = EXCLUDED.command AND idempotency_keys.request_hash = EXCLUDED.request_hash
	RETURNING xmax = 0`

// recordSQL stores a command's result for (actor, key).
const recordSQL = `UPDATE idempotency_keys SET status = 1, response = $3 WHERE actor = $1 AND key = $2`

// claim is the idempotency record a running command owns; decideAndAppend writes the result in
// the transaction of the command's events (recordWith), so a crash after the commit leaves it.
type claim struct {
	actor, key string
}

type claimKey struct{}

type decorateKey struct{}

// withResultDecoration makes the result recorded with the events carry what a handler adds after
// the append (an agent token's claims), as the final record does.
func withResultDecoration(ctx context.Context, f func(*Result)) context.Context {
	return context.WithValue(ctx, decorateKey{}, f)
}

// recordWith returns the statement that records the result build makes of the append's results,
// for the claim in ctx; nil without one.
func recordWith(ctx context.Context, build func([]eventstore.AppendResult) Result) func([]eventstore.AppendResult) eventstore.Statement {
	c, ok := ctx.Value(claimKey{}).(claim)
	if !ok {
		return nil
	}
	decorate, _ := ctx.Value(decorateKey{}).(func(*Result))
	return func(ar []eventstore.AppendResult) eventstore.Statement {
		res := build(ar)
		if decorate != nil {
			decorate(&res)
		}
		return eventstore.Statement{SQL: recordSQL, Args: []any{c.actor, c.key, storedResult(res)}}
	}
}

// storedResult is a result as recorded: a secret is never stored; a replay re-mints the token.
func storedResult(res Result) []byte {
	res.Token, res.Secret = "", ""
	b, _ := json.Marshal(res)
	return b
}

// idempotent makes a command with an Idempotency-Key run once per (actor, key): a repeat with the
// same request returns the first result and appends nothing; the same key with a different
// request is refused. The first request holds a leased claim while it runs; its result is recorded
// in the transaction of its events, so a retry after a crash finds it. A retry while the claim
// holds gets ErrInProgress with the time left; once the lease of a crashed owner expired, the
// retry takes the claim over and runs. Ids derived from the key make a re-run that collides with
// events already in the log harmless.
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
		done, res, err := s.claimOrAnswer(ctx, actor, key, cmd, sum[:])
		if done {
			return res, err
		}
		if s.crashHook != nil && s.crashHook("claimed") {
			return Result{}, errCrashed
		}
		stopRenewing := s.renewClaim(ctx, actor, key)
		res, err = next.Handle(context.WithValue(ctx, claimKey{}, claim{actor: actor, key: key}), cmd)
		stopRenewing()
		cctx := context.WithoutCancel(ctx)
		if err != nil {
			// An attempt that held the claim before this one (its owner too slow to renew, not
			// gone) may have succeeded meanwhile: its recorded result is the answer, whatever this
			// run met (its own events in the log, or the state they made).
			if st, ok := s.storedAnswer(cctx, actor, key, cmd); ok {
				return st.res, st.err
			}
			if errors.Is(err, eventstore.ErrDuplicateEventID) {
				err = fmt.Errorf("%w: an earlier attempt with this idempotency key was interrupted after it was written; its events are in the log", domain.ErrConflict)
			}
			// Forget failures so that the client can fix the request and retry with the same key.
			_, _ = s.cfg.Pool.Exec(cctx, `DELETE FROM idempotency_keys WHERE actor = $1 AND key = $2 AND status = 0 AND owner = $3`, actor, key, s.owner)
			return Result{}, err
		}
		if s.crashHook != nil && s.crashHook("handled") {
			return Result{}, errCrashed
		}
		// Recorded already with the events, unless nothing was appended or the events went in with
		// a key event (their own transaction).
		if _, err := s.cfg.Pool.Exec(cctx, recordSQL, actor, key, storedResult(res)); err != nil {
			s.log.Warn("idempotency record not saved; a retry will be refused as a duplicate", "error", err)
		}
		return res, nil
	})
}

// answer is a stored outcome of an idempotency record.
type answer struct {
	res Result
	err error
}

// claimOrAnswer claims (actor, key) for this process, taking over a claim whose lease expired. When
// it cannot, it answers: the recorded result, a mismatch, or ErrInProgress with the time left.
func (s *Service) claimOrAnswer(ctx context.Context, actor, key string, cmd Command, hash []byte) (bool, Result, error) {
	lease := pgtype.Interval{Microseconds: idempotencyLease.Microseconds(), Valid: true}
	// A claim deleted between the two statements (its request failed) is claimed on the next round.
	for range 3 {
		var inserted bool
		err := s.cfg.Pool.QueryRow(ctx, claimSQL, actor, key, cmd.CommandName(), hash, s.owner, lease).Scan(&inserted)
		if err == nil {
			if !inserted {
				a := ActorFrom(ctx)
				s.log.Info("idempotency claim of a process that is gone taken over", "command", cmd.CommandName(), "actor", actor,
					"correlation_id", a.CorrelationID, "request_id", a.RequestID)
			}
			return false, Result{}, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return true, Result{}, fmt.Errorf("idempotency: %w", err)
		}
		var command string
		var stored []byte
		var status int
		var response []byte
		var left pgtype.Interval
		err = s.cfg.Pool.QueryRow(ctx, `SELECT command, request_hash, status, response, greatest(renewed_at + $3::interval - now(), '0')
			FROM idempotency_keys WHERE actor = $1 AND key = $2`, actor, key, lease).Scan(&command, &stored, &status, &response, &left)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return true, Result{}, fmt.Errorf("idempotency: %w", err)
		}
		if command != cmd.CommandName() || string(stored) != string(hash) {
			return true, Result{}, fmt.Errorf("%w: the key %q was first used for another %s", ErrIdempotencyMismatch, key, command)
		}
		if status != 0 {
			a := s.replayStored(cmd, response)
			return true, a.res, a.err
		}
		wait := time.Duration(left.Microseconds) * time.Microsecond
		if wait <= 0 {
			continue // expired just now: take it over
		}
		return true, Result{}, &InProgressError{RetryAfter: wait}
	}
	return true, Result{}, fmt.Errorf("idempotency: the claim of key %q keeps changing: %w", key, &InProgressError{RetryAfter: time.Second})
}

// renewClaim keeps this process's claim on (actor, key) alive until the returned func is called
// (which waits for the renewer to end).
func (s *Service) renewClaim(ctx context.Context, actor, key string) func() {
	stop, done := make(chan struct{}), make(chan struct{})
	rctx := context.WithoutCancel(ctx)
	go func() {
		defer close(done)
		t := time.NewTicker(idempotencyLease / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				ectx, cancel := context.WithTimeout(rctx, idempotencyLease/3)
				_, err := s.cfg.Pool.Exec(ectx, `UPDATE idempotency_keys SET renewed_at = now() WHERE actor = $1 AND key = $2 AND owner = $3 AND status = 0`,
					actor, key, s.owner)
				cancel()
				if err != nil {
					a := ActorFrom(ctx)
					s.log.Warn("idempotency claim not renewed; a retry may take it over", "error", err,
						"correlation_id", a.CorrelationID, "request_id", a.RequestID)
				}
			}
		}
	}()
	return func() {
		close(stop)
		<-done
	}
}

// storedAnswer reads the recorded result of (actor, key), if there is one.
func (s *Service) storedAnswer(ctx context.Context, actor, key string, cmd Command) (answer, bool) {
	var status int
	var response []byte
	err := s.cfg.Pool.QueryRow(ctx, `SELECT status, response FROM idempotency_keys WHERE actor = $1 AND key = $2`, actor, key).Scan(&status, &response)
	if err != nil || status == 0 {
		return answer{}, false
	}
	return s.replayStored(cmd, response), true
}

func (s *Service) replayStored(cmd Command, response []byte) answer {
	var res Result
	if err := json.Unmarshal(response, &res); err != nil {
		return answer{err: fmt.Errorf("idempotency: stored response: %w", err)}
	}
	res, err := s.replay(cmd, res)
	return answer{res: res, err: err}
}

// replay rebuilds a stored result; an agent token is minted again, byte for byte the same
// (Ed25519 is deterministic and the claims are the stored ones).
func (s *Service) replay(cmd Command, res Result) (Result, error) {
	if _, ok := cmd.(IssueAccessKey); ok && res.ExpiresAt != nil {
		key := s.tokenKeyByID(res.KeyID)
		if key == nil {
			return Result{}, fmt.Errorf("%w: the token key the first response's secret came from (%s) is gone; issue a new access key", ErrNoTokenKey, res.KeyID)
		}
		secret, err := token.AccessKeySecret(key, res.ID)
		if err != nil {
			return Result{}, err
		}
		res.Secret = secret
		return res, nil
	}
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

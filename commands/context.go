package commands

import (
	"context"
	"crypto/sha256"
	"sync/atomic"

	"github.com/google/uuid"
)

// Actor is who asks, and from where. The API builds it from the request.
type Actor struct {
	ID            string // user id (token subject), or "system:<component>"
	ClientIP      string
	UserAgent     string
	RequestID     string
	CorrelationID string
	CausationID   string
}

type actorKey struct{}
type idemKey struct{}

// WithActor attaches the actor to ctx.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// ActorFrom returns the actor attached to ctx, or the anonymous zero Actor.
func ActorFrom(ctx context.Context) Actor {
	a, _ := ctx.Value(actorKey{}).(Actor)
	return a
}

// WithIdempotencyKey attaches a client's Idempotency-Key to ctx.
func WithIdempotencyKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, idemKey{}, key)
}

func idempotencyKey(ctx context.Context) string {
	k, _ := ctx.Value(idemKey{}).(string)
	return k
}

// idGen makes ids for one command execution. With an idempotency key they are derived from it,
// so a retried command produces the same aggregate and event ids (and a duplicate is recognised
// by the log itself); without one they are fresh UUIDv7s.
type idGen struct {
	seed []byte
	n    atomic.Uint32
}

var idNamespace = uuid.MustParse("6f1c9a52-8f0e-4d7a-9a57-3b0f1f3c2d10")

func newIDGen(ctx context.Context, command string) *idGen {
	key := idempotencyKey(ctx)
	if key == "" {
		return &idGen{}
	}
	sum := sha256.Sum256([]byte(ActorFrom(ctx).ID + "\x00" + key + "\x00" + command))
	return &idGen{seed: sum[:]}
}

// next returns the next id of this execution.
func (g *idGen) next() uuid.UUID {
	if g.seed == nil {
		return uuid.Must(uuid.NewV7())
	}
	n := g.n.Add(1)
	return uuid.NewSHA1(idNamespace, append(append([]byte(nil), g.seed...), byte(n>>24), byte(n>>16), byte(n>>8), byte(n)))
}

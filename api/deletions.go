package api

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// userDeletions is when each user was last deleted everywhere (user.deleted with org "*"),
// followed from the log: the API refuses their tokens issued at or before it, as the nodes do.
// A deletion from one organization withdraws the user's roles there, which is how the API
// refuses them there; the user's tokens stay good for the organizations they are still in.
type userDeletions struct {
	mu sync.RWMutex
	at map[string]time.Time
}

// before reports whether user was deleted everywhere at or after issued (an iat counts in whole
// seconds: a token issued in the deletion's second counts as before), and when.
func (d *userDeletions) before(user string, issued time.Time) (time.Time, bool) {
	d.mu.RLock()
	at, ok := d.at[user]
	d.mu.RUnlock()
	return at, ok && !issued.After(at)
}

// fold takes user.deleted records in log order.
func (d *userDeletions) fold(recs []eventstore.Record) error {
	for _, r := range recs {
		if r.Type != domain.TypeUserDeleted {
			continue
		}
		var e domain.UserDeleted
		if err := json.Unmarshal(r.Payload, &e); err != nil {
			return fmt.Errorf("user.deleted at %d: %w", r.Position, err)
		}
		if e.OrgID != domain.PlatformOrg {
			continue
		}
		d.mu.Lock()
		if d.at == nil {
			d.at = map[string]time.Time{}
		}
		if r.RecordedAt.After(d.at[e.UserID]) {
			d.at[e.UserID] = r.RecordedAt
		}
		d.mu.Unlock()
	}
	return nil
}

// followDeletions reads the deletions so far and returns what follows the rest.
func (s *Server) followDeletions(ctx context.Context) (func(context.Context), error) {
	return s.cfg.Log.ReadAndFollow(ctx, []string{domain.TypeUserDeleted}, time.Second, func(err error, from uint64) {
		s.log.Warn("api: following user deletions", "from", from, "error", err)
	}, s.deletions.fold)
}

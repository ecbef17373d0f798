package readmodels

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// Org is an organization (view orgs).
type Org struct {
	ID        string    `db:"org_id"`
	Name      string    `db:"name"`
	CreatedBy string    `db:"created_by"`
	CreatedAt time.Time `db:"created_at"`
	Position  int64     `db:"position"`
}

// OrgFilter selects organizations, by name.
type OrgFilter struct {
	// All lists every organization; otherwise only those in IDs (none when IDs is empty).
	All bool
	IDs []string
	// Name, when set, is the exact name.
	Name string
	// After is the key of the last row of the previous page; the page starts after it.
	After *OrgKey
	// Limit is the most rows returned (at least 1). Ask for one more than a page to learn
	// whether another follows.
	Limit int
}

// OrgKey is the sort key of the organizations list.
type OrgKey struct {
	Name string
}

const orgColumns = `SELECT org_id::text AS org_id, name, created_by, created_at, position FROM orgs`

// ResolveOrg maps an organization's name or id to its id. An organization that does not exist
// (yet, in this view) is domain.ErrNotFound.
func (q *Queries) ResolveOrg(ctx context.Context, ref string) (string, error) {
	var id string
	var err error
	if domain.ValidID(ref) {
		err = q.db.QueryRow(ctx, `SELECT org_id::text FROM orgs WHERE org_id = $1::uuid`, ref).Scan(&id)
	} else {
		err = q.db.QueryRow(ctx, `SELECT org_id::text FROM orgs WHERE name = $1`, ref).Scan(&id)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("organization %q: %w", ref, domain.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("look up organization: %w: %w", eventstore.ErrUnavailable, err)
	}
	return id, nil
}

// ListOrgs lists organizations by name.
func (q *Queries) ListOrgs(ctx context.Context, f OrgFilter) ([]Org, error) {
	const op = "list organizations"
	if err := checkLimit(op, f.Limit); err != nil {
		return nil, err
	}
	var w where
	if !f.All {
		w.add("org_id::text = ANY(?)", f.IDs)
	}
	if f.Name != "" {
		w.add("name = ?", f.Name)
	}
	if f.After != nil {
		w.add("name > ?", f.After.Name)
	}
	return selectRows[Org](ctx, q, op, orgColumns+w.sql()+" ORDER BY name"+w.limit(f.Limit), w.args...)
}

// GetOrg reads one organization by id.
func (q *Queries) GetOrg(ctx context.Context, id string) (Org, error) {
	if !domain.ValidID(id) {
		return Org{}, fmt.Errorf("organization %q: %w", id, domain.ErrNotFound)
	}
	return selectOne[Org](ctx, q, "get organization", "organization "+id, orgColumns+" WHERE org_id = $1::uuid", id)
}

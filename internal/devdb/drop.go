package devdb

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/jackc/pgx/v5"
)

// ErrProtectedDatabase: DropDatabase refuses the server's own databases.
var ErrProtectedDatabase = errors.New("postgres: refusing to drop a database the server itself uses")

// Database is the name of the database s.URL points at.
func (s *Server) Database() (string, error) {
	cfg, err := pgx.ParseConfig(s.URL)
	if err != nil {
		return "", fmt.Errorf("postgres: parse URL: %w", err)
	}
	return cfg.Database, nil
}

// DropDatabase drops the database s.URL points at, ending its sessions (DROP DATABASE … WITH
// (FORCE)); for `tunnelplane db reset`. The maintenance and template databases are refused.
func (s *Server) DropDatabase(ctx context.Context) error {
	name, err := s.Database()
	if err != nil {
		return err
	}
	if name == "" || name == adminDatabase || name == "template0" || name == "template1" {
		return fmt.Errorf("%w: %q", ErrProtectedDatabase, name)
	}
	admin, err := connect(ctx, s.AdminURL, envConnectTimeout)
	if err != nil {
		return fmt.Errorf("postgres: connect to %s: %w", redacted(s.AdminURL), err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("postgres: drop database %q: %w", name, err)
	}
	s.logger.Info("postgres: dropped database", "database", name)
	return nil
}

func redacted(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable url)"
	}
	return u.Redacted()
}

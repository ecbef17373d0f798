package pgtest

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tunnelplane/tunnelplane/migrations"
)

const templatePrefix = "tptmpl_"

// templateLock is the advisory lock (in the server's maintenance database) that processes hold
// while they look for or build a template.
var templateLock = func() int64 {
	sum := sha256.Sum256([]byte("tunnelplane/pgtest/template"))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}()

// templates remembers, per server, the template this process found or built.
var templates = &templateSet{names: map[string]string{}}

type templateSet struct {
	mu    sync.Mutex // held while a template is built, so a process builds it at most once
	names map[string]string
}

// get returns the name of the migrated template on the server, building it when it is missing.
func (s *templateSet) get(ctx context.Context, adminURL string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name, ok := s.names[adminURL]; ok {
		return name, nil
	}
	name, err := templateName()
	if err != nil {
		return "", err
	}
	if _, err := ensureTemplate(ctx, adminURL, name); err != nil {
		return "", err
	}
	s.names[adminURL] = name
	return name, nil
}

// forget drops what get remembers, so that the next get looks again (the template was swept).
func (s *templateSet) forget(adminURL string) {
	s.mu.Lock()
	delete(s.names, adminURL)
	s.mu.Unlock()
}

// templateName is the template of the embedded migrations: tptmpl_ and a hash of their files, so
// that every schema has its own.
func templateName() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(migrations.FS, path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", path, len(b))
		h.Write(b)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("hash migrations: %w", err)
	}
	return templatePrefix + hex.EncodeToString(h.Sum(nil)[:8]), nil
}

// ensureTemplate makes sure the server has the migrated template name, and reports whether this
// call built it. It builds under a test database name (so that sweep removes what a killed build
// leaves), migrates, marks the database as a template nobody may connect to (a connection would
// block copying it), records when it was built and renames it: a template under its final name
// is complete.
func ensureTemplate(ctx context.Context, adminURL, name string) (built bool, err error) {
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return false, fmt.Errorf("connect admin: %w", err)
	}
	defer admin.Close(context.WithoutCancel(ctx)) // ends the session and with it the lock
	if _, err := admin.Exec(ctx, `SELECT pg_advisory_lock($1)`, templateLock); err != nil {
		return false, fmt.Errorf("lock templates: %w", err)
	}
	var exists bool
	if err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return false, fmt.Errorf("find template: %w", err)
	}
	if exists {
		return false, nil
	}

	build := newName()
	if err := createDatabase(ctx, admin, build, ""); err != nil {
		return false, err
	}
	defer func() {
		if !built {
			dropTemplate(context.WithoutCancel(ctx), admin, build)
		}
	}()
	u, err := databaseURL(adminURL, build)
	if err != nil {
		return false, err
	}
	if err := migrations.Up(ctx, u); err != nil {
		return false, fmt.Errorf("migrate template: %w", err)
	}
	for _, sql := range []string{
		"ALTER DATABASE " + ident(build) + " WITH IS_TEMPLATE true ALLOW_CONNECTIONS false",
		"COMMENT ON DATABASE " + ident(build) + " IS " + quote(builtComment(time.Now())),
		"ALTER DATABASE " + ident(build) + " RENAME TO " + ident(name),
	} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "42P04" {
				return false, nil // another process, not sharing our lock, finished first
			}
			return false, fmt.Errorf("template: %s: %w", sql, err)
		}
	}
	return true, nil
}

// builtPrefix starts a template's comment, followed by when it was built (Unix seconds).
const builtPrefix = "tunnelplane test template, built "

func builtComment(t time.Time) string { return builtPrefix + strconv.FormatInt(t.Unix(), 10) }

// builtAt reads the build time from a template's comment.
func builtAt(comment string) (int64, bool) {
	s, ok := strings.CutPrefix(comment, builtPrefix)
	if !ok {
		return 0, false
	}
	ts, err := strconv.ParseInt(s, 10, 64)
	return ts, err == nil
}

// sweepTemplates drops the templates other than current built before cutoff. A process still
// using one builds it again (see NewDatabase).
func sweepTemplates(ctx context.Context, admin *pgx.Conn, current string, cutoff int64) {
	rows, err := admin.Query(ctx, `SELECT datname, coalesce(shobj_description(oid, 'pg_database'), '')
		FROM pg_database WHERE datname LIKE 'tptmpl\_%'`)
	if err != nil {
		return
	}
	type tmpl struct{ name, comment string }
	found, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (tmpl, error) {
		var t tmpl
		err := r.Scan(&t.name, &t.comment)
		return t, err
	})
	if err != nil {
		return
	}
	for _, t := range found {
		if ts, ok := builtAt(t.comment); t.name == current || (ok && ts >= cutoff) {
			continue
		}
		dropTemplate(ctx, admin, t.name)
	}
}

func createDatabase(ctx context.Context, admin *pgx.Conn, name, template string) error {
	sql := "CREATE DATABASE " + ident(name)
	if template != "" {
		sql += " TEMPLATE " + ident(template)
	}
	if _, err := admin.Exec(ctx, sql); err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	return nil
}

func dropDatabase(ctx context.Context, admin *pgx.Conn, name string) {
	_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)")
}

// dropTemplate drops a database that may be marked as a template (which DROP refuses).
func dropTemplate(ctx context.Context, admin *pgx.Conn, name string) {
	_, _ = admin.Exec(ctx, "ALTER DATABASE "+ident(name)+" WITH IS_TEMPLATE false")
	dropDatabase(ctx, admin, name)
}

// isMissingDatabase reports a CREATE DATABASE that failed because its template is gone.
func isMissingDatabase(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "3D000"
}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

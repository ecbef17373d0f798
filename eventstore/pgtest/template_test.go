package pgtest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelplane/tunnelplane/migrations"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func adminConn(t *testing.T) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctxT(t), Server(t).AdminURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func schemaVersion(t *testing.T, u string) migrations.Status {
	t.Helper()
	st, err := migrations.Version(ctxT(t), u)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// NewDatabase hands out a fully migrated database of its own; NewEmptyDatabase an empty one.
func TestNewDatabaseIsMigrated(t *testing.T) {
	t.Parallel()
	latest, err := migrations.Latest()
	if err != nil || latest == 0 {
		t.Fatalf("latest migration: %d, %v", latest, err)
	}
	a, b := NewDatabase(t), NewDatabase(t)
	if a == b {
		t.Fatal("two tests got the same database")
	}
	for _, u := range []string{a, b} {
		if st := schemaVersion(t, u); st.Version != latest || st.Dirty {
			t.Fatalf("%s: schema %+v, want version %d", u, st, latest)
		}
	}
	// A copy is an ordinary database: writable, and not itself a template.
	conn, err := pgx.Connect(ctxT(t), a)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var isTemplate bool
	if err := conn.QueryRow(ctxT(t), `SELECT datistemplate FROM pg_database WHERE datname = current_database()`).Scan(&isTemplate); err != nil || isTemplate {
		t.Fatalf("the copy is a template: %v, %v", isTemplate, err)
	}
	if _, err := conn.Exec(ctxT(t), `CREATE TABLE pgtest_probe (x int); INSERT INTO pgtest_probe VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	if st := schemaVersion(t, NewEmptyDatabase(t)); st.Version != 0 {
		t.Fatalf("empty database at schema %+v", st)
	}
}

// Processes that need the same template at once all get it, built by one of them (the others
// wait on the advisory lock and find it; without the lock they would lose the rename).
func TestTemplateIsBuiltOnce(t *testing.T) {
	t.Parallel()
	srv := Server(t)
	admin := adminConn(t)
	name := templatePrefix + "test_" + randomSuffix()
	t.Cleanup(func() { dropTemplate(context.Background(), admin, name) })

	const n = 4 // each with its own session, as separate processes have
	built := make([]bool, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { built[i], errs[i] = ensureTemplate(ctxT(t), srv.AdminURL, name) })
	}
	wg.Wait()
	builds := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if built[i] {
			builds++
		}
	}
	if builds != 1 {
		t.Fatalf("%d callers built the template, want 1", builds)
	}
	var isTemplate, allowConn bool
	var comment string
	if err := admin.QueryRow(ctxT(t), `SELECT datistemplate, datallowconn, coalesce(shobj_description(oid, 'pg_database'), '')
		FROM pg_database WHERE datname = $1`, name).Scan(&isTemplate, &allowConn, &comment); err != nil {
		t.Fatal(err)
	}
	if ts, ok := builtAt(comment); !isTemplate || allowConn || !ok || time.Since(time.Unix(ts, 0)) > time.Hour {
		t.Fatalf("template %s: is_template %v, allow_connections %v, comment %q", name, isTemplate, allowConn, comment)
	}
	if built, err := ensureTemplate(ctxT(t), srv.AdminURL, name); built || err != nil {
		t.Fatalf("asked again: built %v, %v", built, err)
	}

	copyName := newName()
	if err := createDatabase(ctxT(t), admin, copyName, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dropDatabase(context.Background(), admin, copyName) })
	latest, _ := migrations.Latest()
	if st := schemaVersion(t, withDatabase(t, srv.AdminURL, copyName)); st.Version != latest || st.Dirty {
		t.Fatalf("copy of the template: schema %+v, want version %d", st, latest)
	}
}

// A template swept by another process is recognised as missing, which makes NewDatabase build
// it again.
func TestMissingTemplateIsRecognised(t *testing.T) {
	t.Parallel()
	admin := adminConn(t)
	name := newName()
	err := createDatabase(ctxT(t), admin, name, templatePrefix+"gone_"+randomSuffix())
	if err == nil {
		dropDatabase(context.Background(), admin, name)
		t.Fatal("created a database from a template that does not exist")
	}
	if !isMissingDatabase(err) {
		t.Fatalf("error %v is not recognised as a missing template", err)
	}
}

// Templates of other schemas go once they are old; the current one and recent ones stay.
func TestSweepTemplates(t *testing.T) {
	t.Parallel()
	admin := adminConn(t)
	// newTemplate makes a template as ensureTemplate does (without migrating it), under a name no
	// other test uses.
	newTemplate := func(built time.Time) string {
		build, name := newName(), templatePrefix+"test_"+randomSuffix()
		if err := createDatabase(ctxT(t), admin, build, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			dropTemplate(context.Background(), admin, build)
			dropTemplate(context.Background(), admin, name)
		})
		for _, sql := range []string{
			"ALTER DATABASE " + ident(build) + " WITH IS_TEMPLATE true ALLOW_CONNECTIONS false",
			"COMMENT ON DATABASE " + ident(build) + " IS " + quote(builtComment(built)),
			"ALTER DATABASE " + ident(build) + " RENAME TO " + ident(name),
		} {
			if _, err := admin.Exec(ctxT(t), sql); err != nil {
				t.Fatal(err)
			}
		}
		return name
	}
	long := time.Now().Add(-3 * time.Hour)
	old, recent, current := newTemplate(long), newTemplate(time.Now()), newTemplate(long)
	sweepTemplates(ctxT(t), admin, current, time.Now().Add(-2*time.Hour).Unix())
	exists := func(name string) bool {
		var ok bool
		if err := admin.QueryRow(ctxT(t), `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if exists(old) {
		t.Errorf("the old template %s of another schema was kept", old)
	}
	if !exists(recent) {
		t.Errorf("the recent template %s was dropped", recent)
	}
	if !exists(current) {
		t.Errorf("the current template %s was dropped", current)
	}
}

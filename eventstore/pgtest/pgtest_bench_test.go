package pgtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/migrations"
)

// BenchmarkNewDatabase measures what a database test pays before its first statement: a copy of
// the migrated template, against its baseline, an empty database migrated from scratch (what
// NewDatabase did before templates). Compare the two in one run; the machines here are noisy.
func BenchmarkNewDatabase(b *testing.B) {
	pgtest.Server(b)
	pgtest.NewDatabase(b) // the template is built once per process, not per test
	b.Run("template", func(b *testing.B) {
		for b.Loop() {
			pgtest.NewDatabase(b)
		}
	})
	b.Run("migrate", func(b *testing.B) {
		for b.Loop() {
			u := pgtest.NewEmptyDatabase(b)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if err := migrations.Up(ctx, u); err != nil {
				b.Fatal(err)
			}
			cancel()
		}
	})
}

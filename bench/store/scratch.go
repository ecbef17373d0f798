package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/migrations"
)

// ScratchDatabase creates a database named <prefix>_<random> on the server of adminURL and returns
// its URL and a function that drops it.
func ScratchDatabase(ctx context.Context, adminURL, prefix string) (string, func(), error) {
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := prefix + "_" + hex.EncodeToString(suffix)
	// Parsed first, so that a bad URL never leaves a database behind.
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", nil, err
	}
	u.Path = "/" + name
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", nil, fmt.Errorf("bench: connect: %w", err)
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		admin.Close(ctx)
		return "", nil, fmt.Errorf("bench: create scratch database: %w", err)
	}
	admin.Close(ctx)
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		admin, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			return
		}
		defer admin.Close(ctx)
		_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	}
	return u.String(), drop, nil
}

// ScratchLog is a log on a migrated scratch database (<prefix>_<random>): a fresh log key, the
// genesis, and a started store that knows every domain event type. close stops the store, closes
// the pool and drops the database.
type ScratchLog struct {
	Pool  *pgxpool.Pool
	Store *eventstore.Store
	Key   *eventstore.SigningKey
}

// NewScratchLog makes a ScratchLog; what is wrong is named by op ("bench export").
func NewScratchLog(ctx context.Context, adminURL, prefix, op string, logger *slog.Logger) (_ *ScratchLog, closeLog func(), err error) {
	dbURL, drop, err := ScratchDatabase(ctx, adminURL, prefix)
	if err != nil {
		return nil, nil, err
	}
	var undo []func()
	closeLog = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	undo = append(undo, drop)
	defer func() {
		if err != nil {
			closeLog()
		}
	}()
	if err := migrations.Up(ctx, dbURL); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	l := &ScratchLog{}
	if l.Pool, err = eventstore.Connect(ctx, dbURL, eventstore.ConnectOptions{Role: "-", MaxConns: 8, ApplicationName: "tunnelplane-" + strings.ReplaceAll(op, " ", "-")}); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	undo = append(undo, l.Pool.Close)
	if l.Key, err = eventstore.GenerateSigningKey(); err != nil {
		return nil, nil, err
	}
	if _, err := eventstore.Init(ctx, l.Pool, l.Key, time.Now()); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	var types []eventstore.EventType
	for _, et := range domain.EventTypes() {
		types = append(types, eventstore.EventType{Name: et.Name, SchemaVersion: et.SchemaVersion, Upcasters: et.Upcasters})
	}
	if l.Store, err = eventstore.New(eventstore.Config{Pool: l.Pool, Key: l.Key, Registry: eventstore.MustRegistry(types...), Logger: logger}); err != nil {
		return nil, nil, err
	}
	if err := l.Store.Start(ctx); err != nil {
		return nil, nil, err
	}
	undo = append(undo, l.Store.Stop)
	return l, closeLog, nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/migrations"
)

func newInitCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "init",
		Short: "Create the schema, the log signing key and the genesis record (harmless to repeat)",
		Long: `init applies the database migrations, creates the control plane's log signing key in
<data-dir>/keys/log (mode 0600) if there is none, and writes the genesis record carrying its
public key. On an initialised log it only checks that the key matches. The last line printed is
the key's fingerprint.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return initLog(cmd.Context(), g, true)
		},
	}
}

// initLog migrates the database and ensures the genesis record; verbose prints what it did.
func initLog(ctx context.Context, g *globals, verbose bool) error {
	srv, err := g.resolveDatabase(ctx)
	if err != nil {
		return err
	}
	if err := migrations.Up(ctx, srv.URL); err != nil {
		return err
	}
	st, err := migrations.Version(ctx, srv.URL)
	if err != nil {
		return err
	}
	pool, err := eventstore.Connect(ctx, srv.URL, eventstore.ConnectOptions{})
	if err != nil {
		return err
	}
	defer pool.Close()
	key, err := logKeyForInit(ctx, g, pool)
	if err != nil {
		return err
	}
	res, err := eventstore.Init(ctx, pool, key, time.Now())
	if err != nil {
		return err
	}
	if verbose {
		state := "already initialised"
		if res.Created {
			state = "created"
		}
		fmt.Fprintf(g.stdout, "database:    %s (%s)\n", redactURL(srv.URL), srv.Source)
		fmt.Fprintf(g.stdout, "schema:      version %d\n", st.Version)
		fmt.Fprintf(g.stdout, "log:         %s (%s)\n", res.Origin, state)
		fmt.Fprintf(g.stdout, "log key:     %s in %s\n", res.KeyID, g.logKeys())
		fmt.Fprintf(g.stdout, "fingerprint: %s\n", res.Fingerprint)
	}
	return nil
}

// logKeyForInit picks the key for the log: the one in force for an existing log, the only key in
// the data dir for a new one, or a fresh key.
func logKeyForInit(ctx context.Context, g *globals, pool *pgxpool.Pool) (*eventstore.SigningKey, error) {
	keys := g.logKeys()
	inForce, err := eventstore.LogKeyID(ctx, pool)
	if err != nil {
		return nil, err
	}
	if inForce != "" {
		k, err := keys.Load(ctx, inForce)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: the log's key in force is %s but %s does not hold it (wrong --data-dir?)",
				eventstore.ErrKeyMismatch, inForce, keys)
		}
		return k, err
	}
	ids, err := keys.IDs()
	if err != nil {
		return nil, err
	}
	switch len(ids) {
	case 0:
		return keys.Create()
	case 1:
		return keys.Load(ctx, ids[0])
	default:
		return nil, fmt.Errorf("%s holds %d keys and the log is empty: keep only the one to start the log with", keys, len(ids))
	}
}

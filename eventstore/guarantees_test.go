package eventstore_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

// The database itself refuses changes to the log: the app role lacks the privilege, and the
// trigger refuses even a superuser.
func TestLogIsImmutableInTheDatabase(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	if _, err := e.store.Append(ctx, "s", eventstore.NoStream, note(1)); err != nil {
		t.Fatal(err)
	}
	app := pgtest.Pool(t, e.url)
	super := pgtest.SuperPool(t, e.url)
	stmts := []string{
		`UPDATE events SET payload = payload WHERE global_position = 1`,
		`DELETE FROM events WHERE global_position = 1`,
		`TRUNCATE events`,
		`UPDATE checkpoints SET note = note`,
		`DELETE FROM checkpoints`,
		`TRUNCATE checkpoints`,
		`DELETE FROM log_head`,
	}
	for _, sql := range stmts {
		for who, pool := range map[string]interface {
			Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
		}{"app role": app, "superuser": super} {
			_, err := pool.Exec(ctx, sql)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
				t.Errorf("%s: %s: err = %v, want insufficient_privilege (42501)", who, sql, err)
			}
		}
	}
	// The app role cannot insert rows out of band either way it likes: it may INSERT, but verify
	// would catch a forged row; what it must not do is change history, shown above.
	verifyOK(t, e.url)
}

// proxy forwards TCP to PostgreSQL and can cut every connection, standing in for a database
// that becomes unreachable.
type proxy struct {
	ln      net.Listener
	target  string
	mu      sync.Mutex
	conns   []net.Conn
	refused bool
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refused := p.refused
		p.mu.Unlock()
		if refused {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		go func() { _, _ = io.Copy(c, up); c.Close() }()
	}
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refused = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) restore() {
	p.mu.Lock()
	p.refused = false
	p.mu.Unlock()
}

// When the database goes away the caller is told (ErrUnavailable), within the batch timeout,
// nothing half-written remains, and appends work again once it is back.
func TestDatabaseUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	u, _ := url.Parse(e.url)
	p := newProxy(t, u.Host)
	u.Host = p.ln.Addr().String()
	reg := eventstore.MustRegistry(testTypes()...)
	pool, err := eventstore.Connect(ctx, u.String()+"&connect_timeout=2", eventstore.ConnectOptions{MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	st, err := eventstore.New(eventstore.Config{Pool: pool, Key: e.key, Registry: reg, BatchTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer st.Stop()
	if _, err := st.Append(ctx, "u", eventstore.NoStream, note(1)); err != nil {
		t.Fatal(err)
	}
	p.cut()
	start := time.Now()
	_, err = st.Append(ctx, "u", eventstore.Exact(1), note(2), note(3))
	if !errors.Is(err, eventstore.ErrUnavailable) {
		t.Fatalf("append with the database gone: err = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the caller waited %s to learn the database is gone", d)
	}
	p.restore()
	var res eventstore.AppendResult
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err = st.Append(ctx, "u", eventstore.Exact(1), note(2), note(3))
		if err == nil || time.Now().After(deadline) {
			break
		}
		if !errors.Is(err, eventstore.ErrUnavailable) {
			t.Fatalf("append after recovery: %v", err)
		}
	}
	if err != nil {
		t.Fatalf("append still failing 30s after recovery: %v", err)
	}
	if res.StreamVersion != 3 || res.FirstPosition != 2 {
		t.Fatalf("after recovery: %+v, want version 3 at positions 2..3 (nothing of the failed append kept)", res)
	}
	verifyOK(t, e.url)
}

// A subscription resumed from a cursor continues exactly where it stopped.
func TestSubscribeResumesFromCursor(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	for i := range 10 {
		if _, err := e.store.Append(ctx, "r", eventstore.AnyVersion, note(i)); err != nil {
			t.Fatal(err)
		}
	}
	var got []uint64
	sub := func(from uint64, stopAfter int) uint64 {
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		next := from
		err := e.store.Subscribe(sctx, from, eventstore.SubscribeOptions{BatchSize: 3}, func(_ context.Context, recs []eventstore.Record) error {
			for _, r := range recs {
				got = append(got, r.Position)
				next = r.Position + 1
				if len(got) == stopAfter {
					cancel()
					return context.Canceled
				}
			}
			return nil
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("subscription ended with %v", err)
		}
		return next
	}
	cursor := sub(0, 4)
	go func() {
		for i := range 5 {
			if _, err := e.store.Append(ctx, "r", eventstore.AnyVersion, note(100+i)); err != nil {
				t.Error(err)
			}
		}
	}()
	sub(cursor, 16) // 11 stored + 5 live
	for i, p := range got {
		if p != uint64(i) {
			t.Fatalf("positions %v: index %d holds %d", got, i, p)
		}
	}
	if len(got) != 16 {
		t.Fatalf("got %d records, want 16", len(got))
	}
}

// A reader can wait for its own write to become visible.
func TestWaitForPosition(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	other := startStore(t, e.url, e.key, nil)
	res, err := other.Append(ctx, "w", eventstore.NoStream, note(1))
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := e.store.WaitForPosition(wctx, res.LastPosition); err != nil {
		t.Fatalf("wait for a committed position: %v", err)
	}
	short, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel2()
	if err := e.store.WaitForPosition(short, res.LastPosition+5); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait for a future position: err = %v, want deadline exceeded", err)
	}
}

// verify --from starts at a checkpoint, authenticated by its signed root, and --to stops early.
func TestVerifyRange(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	for i := range 40 {
		if _, err := e.store.Append(ctx, "v", eventstore.AnyVersion, note(i), note(i)); err != nil {
			t.Fatal(err)
		}
	}
	pool := pgtest.Pool(t, e.url)
	rep, err := eventstore.Verify(ctx, pool, eventstore.VerifyOptions{From: 50})
	if err != nil || !rep.OK() {
		t.Fatalf("verify --from 50: %v %v", err, rep.Failure)
	}
	if rep.From > 50 || rep.From < 40 || rep.To != 80 {
		t.Fatalf("verify --from 50 covered %d..%d, want to start at the checkpoint at or before 50 and end at 80", rep.From, rep.To)
	}
	to := uint64(20)
	rep, err = eventstore.Verify(ctx, pool, eventstore.VerifyOptions{To: &to})
	if err != nil || !rep.OK() || rep.To != 20 || rep.Count != 21 {
		t.Fatalf("verify --to 20: %+v %v", rep, err)
	}
	// A damaged record before From is outside the range; one after is found.
	conn, err := pgx.Connect(ctx, e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	mustExec(t, conn, `SET session_replication_role = replica`)
	mustExec(t, conn, `UPDATE events SET payload = convert_to('{}', 'UTF8') WHERE global_position = 70`)
	rep, err = eventstore.Verify(ctx, pool, eventstore.VerifyOptions{From: 50})
	if err != nil || rep.OK() || rep.Failure.Position != 70 {
		t.Fatalf("verify --from 50 on a log damaged at 70: %+v %v", rep.Failure, err)
	}
}

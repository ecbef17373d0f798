package eventstore_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

// TestHelperAppender is not a test: it is the body of a child process started by the tests
// below. It appends batches of events to its stream until it has written TUNNELPLANE_TEST_COUNT
// (or forever) and prints "ack <event id> <position>" for every event only after Append returned.
func TestHelperAppender(t *testing.T) {
	if os.Getenv(helperEnv) != "appender" {
		t.Skip("helper process only")
	}
	u := os.Getenv("TUNNELPLANE_TEST_URL")
	key, err := eventstore.LoadKeyFile(os.Getenv("TUNNELPLANE_TEST_KEY"))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(3)
	}
	count, _ := strconv.Atoi(os.Getenv("TUNNELPLANE_TEST_COUNT"))
	stream := os.Getenv("TUNNELPLANE_TEST_STREAM")
	ctx := context.Background()
	pool, err := eventstore.Connect(ctx, u, eventstore.ConnectOptions{MaxConns: 4})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(3)
	}
	st, err := eventstore.New(eventstore.Config{Pool: pool, Key: key, Registry: eventstore.MustRegistry(testTypes()...)})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(3)
	}
	if err := st.Start(ctx); err != nil {
		fmt.Println("error", err)
		os.Exit(3)
	}
	out := bufio.NewWriter(os.Stdout)
	version := uint64(0)
	for n := 0; count == 0 || n < count; {
		batch := 1 + n%7
		if count > 0 {
			batch = min(batch, count-n)
		}
		events := make([]eventstore.EventData, batch)
		for i := range events {
			events[i] = note(n + i)
			events[i].ID = uuid.Must(uuid.NewV7())
		}
		res, err := st.Append(ctx, stream, eventstore.Exact(version), events...)
		if err != nil {
			fmt.Fprintln(out, "error", err)
			out.Flush()
			os.Exit(3)
		}
		version = res.StreamVersion
		for i, e := range events {
			fmt.Fprintf(out, "ack %s %d\n", e.ID, res.FirstPosition+uint64(i))
		}
		out.Flush()
		n += batch
	}
	st.Stop()
	pool.Close()
	os.Exit(0)
}

type child struct {
	cmd  *exec.Cmd
	acks chan [2]string
	errs chan string
	done chan struct{}
}

func startAppender(t *testing.T, u, keyPath, stream string, count int) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperAppender$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"=appender", "TUNNELPLANE_TEST_URL="+u, "TUNNELPLANE_TEST_KEY="+keyPath,
		"TUNNELPLANE_TEST_STREAM="+stream, "TUNNELPLANE_TEST_COUNT="+strconv.Itoa(count))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, acks: make(chan [2]string, 1<<16), errs: make(chan string, 16), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 3 && f[0] == "ack":
				c.acks <- [2]string{f[1], f[2]}
			case len(f) > 0 && f[0] == "error":
				c.errs <- sc.Text()
			}
		}
		close(c.acks)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return c
}

func writeKey(t *testing.T, key *eventstore.SigningKey) string {
	t.Helper()
	p := t.TempDir() + "/log.pem"
	if err := eventstore.WriteKeyFile(p, key); err != nil {
		t.Fatal(err)
	}
	return p
}

// Writers in three processes and in this one append concurrently while a subscriber checks that
// positions arrive contiguous, each exactly once; afterwards every acknowledged event is in the
// log at the position it was acknowledged with, and the chain verifies.
func TestConcurrentWritersAcrossProcesses(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	keyPath := writeKey(t, e.key)
	const perChild, children, local, perLocal = 300, 3, 8, 60

	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	total := uint64(1 + children*perChild + local*perLocal)
	var seen []eventstore.Record
	subDone := make(chan error, 1)
	go func() {
		subDone <- e.store.Subscribe(ctx, 0, eventstore.SubscribeOptions{BatchSize: 64}, func(_ context.Context, recs []eventstore.Record) error {
			seen = append(seen, recs...)
			if uint64(len(seen)) >= total {
				cancel()
			}
			return nil
		})
	}()

	kids := make([]*child, children)
	for i := range kids {
		kids[i] = startAppender(t, e.url, keyPath, fmt.Sprintf("proc-%d", i), perChild)
	}
	acked := map[string]uint64{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range local {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perLocal {
				ev := note(i)
				ev.ID = uuid.Must(uuid.NewV7())
				res, err := e.store.Append(ctxT(t), fmt.Sprintf("local-%d", w), eventstore.AnyVersion, ev)
				if err != nil {
					t.Errorf("local append: %v", err)
					return
				}
				mu.Lock()
				acked[ev.ID.String()] = res.FirstPosition
				mu.Unlock()
			}
		}()
	}
	for _, k := range kids {
		for a := range k.acks {
			pos, _ := strconv.ParseUint(a[1], 10, 64)
			mu.Lock()
			acked[a[0]] = pos
			mu.Unlock()
		}
		if err := k.cmd.Wait(); err != nil {
			t.Fatalf("child appender: %v (%v)", err, drain(k.errs))
		}
	}
	wg.Wait()
	if err := <-subDone; err != context.Canceled {
		t.Fatalf("subscription ended with %v after %d of %d records", err, len(seen), total)
	}
	if uint64(len(seen)) != total {
		t.Fatalf("subscriber saw %d records, want %d", len(seen), total)
	}
	byID := map[string]uint64{}
	for i, r := range seen {
		if r.Position != uint64(i) {
			t.Fatalf("subscriber got position %d at index %d", r.Position, i)
		}
		byID[r.EventID.String()] = r.Position
	}
	if len(acked) != children*perChild+local*perLocal {
		t.Fatalf("%d acknowledged events, want %d", len(acked), children*perChild+local*perLocal)
	}
	for id, pos := range acked {
		if got, ok := byID[id]; !ok || got != pos {
			t.Fatalf("acknowledged event %s at %d: in the log at %d (present %v)", id, pos, got, ok)
		}
	}
	rep := verifyOK(t, e.url)
	if rep.Count != total {
		t.Fatalf("verified %d, want %d", rep.Count, total)
	}
}

func drain(ch chan string) []string {
	var out []string
	for {
		select {
		case s := <-ch:
			out = append(out, s)
		default:
			return out
		}
	}
}

// An appending process killed with SIGKILL loses no acknowledged event, and the log still
// verifies and accepts new appends.
func TestKilledAppenderLosesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	keyPath := writeKey(t, e.key)
	for round := range 3 {
		k := startAppender(t, e.url, keyPath, fmt.Sprintf("victim-%d", round), 0)
		acked := map[string]uint64{}
		deadline := time.After(time.Minute)
		for len(acked) < 150+round*100 {
			select {
			case a, ok := <-k.acks:
				if !ok {
					t.Fatalf("child exited early: %v", drain(k.errs))
				}
				pos, _ := strconv.ParseUint(a[1], 10, 64)
				acked[a[0]] = pos
			case <-deadline:
				t.Fatalf("only %d acks in a minute", len(acked))
			}
		}
		if err := k.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for a := range k.acks { // acks printed before the kill still count
			pos, _ := strconv.ParseUint(a[1], 10, 64)
			acked[a[0]] = pos
		}
		_ = k.cmd.Wait()

		pool := pgtest.Pool(t, e.url)
		for id, pos := range acked {
			var got int64
			if err := pool.QueryRow(ctxT(t), `SELECT global_position FROM events WHERE event_id = $1`, id).Scan(&got); err != nil {
				t.Fatalf("round %d: acknowledged event %s (position %d) is not in the log: %v", round, id, pos, err)
			}
			if uint64(got) != pos {
				t.Fatalf("round %d: event %s acknowledged at %d but stored at %d", round, id, pos, got)
			}
		}
		verifyOK(t, e.url)
	}
	if _, err := e.store.Append(ctxT(t), "after-kill", eventstore.NoStream, note(1)); err != nil {
		t.Fatalf("append after the kills: %v", err)
	}
	verifyOK(t, e.url)
}

package exportjobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/tunnelplane/tunnelplane/compliance/evidence"
	"github.com/tunnelplane/tunnelplane/compliance/exportjobs"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// noLog is an Appender that refuses every record.
type noLog struct{}

func (noLog) Append(context.Context, string, eventstore.ExpectedVersion, ...eventstore.EventData) (eventstore.AppendResult, error) {
	return eventstore.AppendResult{}, errors.New("not in this test")
}

func config(dir string, key func(context.Context) (*eventstore.SigningKey, error)) exportjobs.Config {
	// The pool is never used: every export made with this config fails at its key.
	return exportjobs.Config{Dir: dir, Pool: &pgxpool.Pool{}, Log: noLog{}, Key: key, QueueSize: 1}
}

// One export runs at a time and one more waits; a third is refused (ErrQueueFull) rather than
// queued without bound. A failure is in the export's status with its reason, and no bundle.
func TestQueueIsBoundedAndFailuresShow(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	started := make(chan struct{}, 4)
	m, err := exportjobs.New(config(t.TempDir(), func(ctx context.Context) (*eventstore.SigningKey, error) {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, errors.New("no space left on device")
	}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Submit(exportjobs.Request{}); !errors.Is(err, exportjobs.ErrStopped) {
		t.Fatalf("before Start: %v", err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	first, err := m.Submit(exportjobs.Request{Actor: "root", From: "0", To: "9"})
	if err != nil {
		t.Fatal(err)
	}
	<-started // the worker holds the first
	second, err := m.Submit(exportjobs.Request{Actor: "root", From: "0", To: "9"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Submit(exportjobs.Request{Actor: "root", From: "0", To: "9"}); !errors.Is(err, exportjobs.ErrQueueFull) {
		t.Fatalf("a third: %v, want ErrQueueFull", err)
	}
	if j, _ := m.Get(first.ID); j.State != exportjobs.StateRunning {
		t.Fatalf("first: %+v", j)
	}
	close(release)
	for _, id := range []string{first.ID, second.ID} {
		poll.Until(t, 5*time.Second, "the export failed", func() bool {
			j, _ := m.Get(id)
			return j.State == exportjobs.StateFailed
		})
		j, _ := m.Get(id)
		if j.Error != "export: the log key: no space left on device" || j.FinishedAt == nil {
			t.Fatalf("failed export: %+v", j)
		}
		if _, _, err := m.Bundle(id); !errors.Is(err, exportjobs.ErrNoBundle) {
			t.Fatalf("bundle of a failed export: %v", err)
		}
	}
	if n := len(m.List(func(exportjobs.Job) bool { return true })); n != 2 {
		t.Fatalf("%d exports listed", n)
	}
}

// After a restart: an export that was queued or running is failed as interrupted; a finished one
// is still downloadable while its bundle is there, and failed when it is gone.
func TestRestartKeepsFinishedExports(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(j exportjobs.Job) {
		raw, err := json.Marshal(j)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, j.ID+".json"), raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Now().UTC()
	running := exportjobs.Job{ID: uuid.NewString(), State: exportjobs.StateRunning, CreatedAt: at}
	kept := exportjobs.Job{ID: uuid.NewString(), State: exportjobs.StateDone, CreatedAt: at, BundleSHA256: "ab"}
	lost := exportjobs.Job{ID: uuid.NewString(), State: exportjobs.StateDone, CreatedAt: at}
	for _, j := range []exportjobs.Job{running, kept, lost} {
		write(j)
	}
	if err := os.WriteFile(filepath.Join(dir, kept.ID+".tar.zst"), []byte("bundle"), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := exportjobs.New(config(dir, func(context.Context) (*eventstore.SigningKey, error) { return nil, errors.New("unused") }))
	if err != nil {
		t.Fatal(err)
	}
	if j, _ := m.Get(running.ID); j.State != exportjobs.StateFailed || j.Error == "" {
		t.Fatalf("interrupted: %+v", j)
	}
	f, j, err := m.Bundle(kept.ID)
	if err != nil {
		t.Fatalf("kept: %v %+v", err, j)
	}
	f.Close()
	if j, _ := m.Get(lost.ID); j.State != exportjobs.StateFailed {
		t.Fatalf("bundle gone: %+v", j)
	}
	if _, err := m.Get(uuid.NewString()); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("unknown: %v", err)
	}
	var _ evidence.Appender = noLog{}
}

// Start and Stop from many goroutines: one worker at most, Stop waits for it, no restart.
func TestStartStopStress(t *testing.T) {
	t.Parallel()
	for range 10 {
		m, err := exportjobs.New(config(t.TempDir(), func(context.Context) (*eventstore.SigningKey, error) { return nil, errors.New("unused") }))
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		for range 4 {
			go func() {
				defer func() { done <- struct{}{} }()
				_ = m.Start(context.Background())
				m.Stop()
			}()
		}
		for range 4 {
			<-done
		}
		if err := m.Start(context.Background()); err == nil {
			t.Fatal("started again after Stop")
		}
		if _, err := m.Submit(exportjobs.Request{}); !errors.Is(err, exportjobs.ErrStopped) {
			t.Fatalf("submit after Stop: %v", err)
		}
	}
}

// An export whose bundle was written but whose export.created could not be appended failed: its
// file is removed, so nothing that the log does not record can be downloaded.
func TestUnrecordedBundleIsNotKept(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t, pgtest.NewDatabase(t))
	key, err := eventstore.KeyDir(t.TempDir()).Create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eventstore.Init(ctx, pool, key, time.Now()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	m, err := exportjobs.New(exportjobs.Config{Dir: dir, Pool: pool, Log: noLog{}, Key: func(context.Context) (*eventstore.SigningKey, error) { return key, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	j, err := m.Submit(exportjobs.Request{Actor: "root", From: "0", To: "0"})
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "the export failed", func() bool {
		j, _ = m.Get(j.ID)
		return j.State == exportjobs.StateFailed
	})
	if !strings.Contains(j.Error, "record the export") || j.RecordsTotal == 0 || j.RecordsDone != j.RecordsTotal {
		t.Fatalf("failed export: %+v", j)
	}
	if _, _, err := m.Bundle(j.ID); !errors.Is(err, exportjobs.ErrNoBundle) {
		t.Fatalf("bundle: %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != j.ID+".json" {
			t.Errorf("left in the exports dir: %s", e.Name())
		}
	}
}

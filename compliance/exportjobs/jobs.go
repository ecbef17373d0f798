// Package exportjobs runs evidence exports the API was asked for, one at a time in the
// background, and keeps their bundles in the control plane's data dir for download. It owns
// <data-dir>/exports (a JSON record per export and its bundle) and nothing else; the export
// itself is compliance/evidence's.
//
// What a restart does: an export queued or running when the process stopped is marked failed
// ("interrupted") when the next process loads the directory (ask again); finished exports stay
// downloadable as long as their bundle file is there. With two control plane replicas each has
// its own directory: an export is listed and downloadable only on the replica that ran it (its
// record names the host); export.created is in the log either way.
package exportjobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelplane/tunnelplane/compliance/evidence"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

// States of an export.
const (
	StateQueued  = "queued"
	StateRunning = "running"
	StateDone    = "done"
	StateFailed  = "failed"
)

// Sentinel errors. Match with errors.Is.
var (
	// ErrQueueFull: as many exports wait as the queue holds; ask again later.
	ErrQueueFull = errors.New("the export queue is full")
	// ErrStopped: exports are not running in this process.
	ErrStopped = errors.New("exports are not running")
	// ErrNoBundle: the export has no bundle to download (not done, or its file is gone).
	ErrNoBundle = errors.New("the export has no bundle to download")
)

// Defaults and bounds of Config.
const (
	DefaultQueueSize = 4
	MaxQueueSize     = 64
	DefaultMaxJobs   = 1000
)

// Config configures the exports.
type Config struct {
	// Dir holds the exports' records and bundles (<data-dir>/exports); made when missing.
	Dir  string
	Pool *pgxpool.Pool
	Log  evidence.Appender
	// Key returns the log key in force (it signs each bundle's manifest).
	Key func(ctx context.Context) (*eventstore.SigningKey, error)
	// QueueSize bounds the exports waiting to run. Default DefaultQueueSize, at most MaxQueueSize.
	QueueSize int
	// MaxJobs bounds the exports remembered; beyond it the oldest finished one is forgotten and
	// its bundle deleted. Default DefaultMaxJobs.
	MaxJobs int
	Logger  *slog.Logger
	Now     func() time.Time
	// Personal, when set, opens the sealed personal data of each bundle's window
	// (evidence.FilePersonal).
	Personal evidence.PersonalOpener
}

// Validate reports every problem.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("exports config: Dir is required"))
	}
	if c.Pool == nil || c.Log == nil || c.Key == nil {
		errs = append(errs, errors.New("exports config: Pool, Log and Key are required"))
	}
	if c.QueueSize < 0 || c.QueueSize > MaxQueueSize {
		errs = append(errs, fmt.Errorf("exports config: QueueSize %d: want 0 (default) to %d", c.QueueSize, MaxQueueSize))
	}
	if c.MaxJobs < 0 {
		errs = append(errs, errors.New("exports config: MaxJobs is negative"))
	}
	return errors.Join(errs...)
}

// Request is what an export is asked for.
type Request struct {
	Window evidence.Window
	// From and To are the window as the caller gave it (positions or RFC 3339 times), recorded.
	From, To string
	// Actor, RequestID and CorrelationID are who asked, recorded in export.created's metadata.
	Actor, RequestID, CorrelationID string
}

// Job is an export's record.
type Job struct {
	ID    string `json:"id"`
	OrgID string `json:"org_id,omitempty"`
	// From and To are the window as asked for.
	From        string `json:"from"`
	To          string `json:"to"`
	RequestedBy string `json:"requested_by"`
	State       string `json:"state"`
	// Error says why a failed export failed.
	Error string `json:"error,omitempty"`
	// RecordsDone of RecordsTotal: the log's records read so far (an export reads the whole log).
	RecordsDone  uint64     `json:"records_done"`
	RecordsTotal uint64     `json:"records_total"`
	CreatedAt    time.Time  `json:"created_at"`
	StartedAt    *time.Time `json:"started_at,omitempty"`
	FinishedAt   *time.Time `json:"finished_at,omitempty"`
	// Of a finished export: the window's positions, the records the bundle holds in full, its
	// size and SHA-256 (as export.created records it) and the position of export.created.
	FirstPosition *uint64 `json:"first_position,omitempty"`
	LastPosition  *uint64 `json:"last_position,omitempty"`
	Records       uint64  `json:"records,omitempty"`
	Bytes         int64   `json:"bytes,omitempty"`
	BundleSHA256  string  `json:"bundle_sha256,omitempty"`
	Position      *uint64 `json:"position,omitempty"`
	// Host is the control plane instance that holds the bundle.
	Host string `json:"host"`

	requestID, correlationID string
	window                   evidence.Window
}

// Manager runs exports one at a time.
type Manager struct {
	cfg  Config
	log  *slog.Logger
	host string
	life lifecycle.Lifecycle

	mu     sync.Mutex
	jobs   map[string]*Job
	queue  chan string
	closed bool // the worker stopped: nothing queued now would run
}

// New loads the exports recorded in Dir. Exports an earlier process left queued or running are
// marked failed (interrupted); finished ones whose bundle is gone, failed too.
func New(cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.MaxJobs == 0 {
		cfg.MaxJobs = DefaultMaxJobs
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("exports: %w", err)
	}
	host, _ := os.Hostname()
	m := &Manager{cfg: cfg, log: cfg.Logger, host: host, jobs: map[string]*Job{}, queue: make(chan string, cfg.QueueSize)}
	if err := m.load(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Manager) recordPath(id string) string { return filepath.Join(m.cfg.Dir, id+".json") }

// BundlePath is where a finished export's bundle is.
func (m *Manager) bundlePath(id string) string { return filepath.Join(m.cfg.Dir, id+".tar.zst") }

func (m *Manager) load() error {
	entries, err := os.ReadDir(m.cfg.Dir)
	if err != nil {
		return fmt.Errorf("exports: %w", err)
	}
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !domain.ValidID(id) {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(m.cfg.Dir, e.Name()))
		if err != nil {
			return fmt.Errorf("exports: %w", err)
		}
		var j Job
		if err := json.Unmarshal(raw, &j); err != nil || j.ID != id {
			m.log.Warn("exports: an unreadable export record is ignored", "file", e.Name())
			continue
		}
		changed := false
		switch j.State {
		case StateQueued, StateRunning:
			j.State, j.Error, changed = StateFailed, "interrupted: the control plane stopped before the export finished; ask again", true
		case StateDone:
			if _, err := os.Stat(m.bundlePath(id)); err != nil {
				j.State, j.Error, changed = StateFailed, "the bundle file is gone from this control plane instance", true
			}
		}
		if changed {
			now := m.cfg.Now().UTC()
			j.FinishedAt = &now
			if err := m.save(&j); err != nil {
				return err
			}
		}
		m.jobs[id] = &j
	}
	for len(m.jobs) > m.cfg.MaxJobs {
		if !m.forgetOldest() {
			break
		}
	}
	return nil
}

// save writes a job's record (through a temporary file, renamed).
func (m *Manager) save(j *Job) error {
	raw, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("exports: %w", err)
	}
	tmp := m.recordPath(j.ID) + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return fmt.Errorf("exports: record export %s: %w", j.ID, err)
	}
	if err := os.Rename(tmp, m.recordPath(j.ID)); err != nil {
		return fmt.Errorf("exports: record export %s: %w", j.ID, err)
	}
	return nil
}

// forgetOldest drops the oldest finished export and its files; false when none is finished.
// Called with mu held (or before Start).
func (m *Manager) forgetOldest() bool {
	var oldest *Job
	for _, j := range m.jobs {
		if (j.State == StateDone || j.State == StateFailed) && (oldest == nil || j.CreatedAt.Before(oldest.CreatedAt)) {
			oldest = j
		}
	}
	if oldest == nil {
		return false
	}
	delete(m.jobs, oldest.ID)
	_ = os.Remove(m.bundlePath(oldest.ID))
	_ = os.Remove(m.recordPath(oldest.ID))
	return true
}

// Start runs the worker until Stop.
func (m *Manager) Start(ctx context.Context) error {
	return m.life.Start(ctx, "exports", func(context.Context) error {
		m.life.Go(m.work)
		return nil
	})
}

// Stop ends the worker; an export running then fails as interrupted. Safe to call twice.
func (m *Manager) Stop() { m.life.Stop() }

// Submit queues an export. ErrQueueFull when the queue is full, ErrStopped when not running.
func (m *Manager) Submit(req Request) (Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.life.Running() || m.closed {
		return Job{}, ErrStopped
	}
	if len(m.jobs) >= m.cfg.MaxJobs && !m.forgetOldest() {
		return Job{}, ErrQueueFull
	}
	j := &Job{ID: uuid.Must(uuid.NewV7()).String(), OrgID: req.Window.OrgID, From: req.From, To: req.To, RequestedBy: req.Actor, State: StateQueued,
		CreatedAt: m.cfg.Now().UTC(), Host: m.host, requestID: req.RequestID, correlationID: req.CorrelationID, window: req.Window}
	select {
	case m.queue <- j.ID:
	default:
		return Job{}, ErrQueueFull
	}
	m.jobs[j.ID] = j
	if err := m.save(j); err != nil {
		// The worker finds no record and skips it: nothing was promised.
		delete(m.jobs, j.ID)
		return Job{}, err
	}
	return *j, nil
}

// Get returns an export's record.
func (m *Manager) Get(id string) (Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[id]
	if !ok {
		return Job{}, fmt.Errorf("export %q: %w", id, domain.ErrNotFound)
	}
	return *j, nil
}

// List returns the exports keep selects, newest first.
func (m *Manager) List(keep func(Job) bool) []Job {
	m.mu.Lock()
	out := make([]Job, 0, len(m.jobs))
	for _, j := range m.jobs {
		if keep(*j) {
			out = append(out, *j)
		}
	}
	m.mu.Unlock()
	sort.Slice(out, func(a, b int) bool {
		if !out[a].CreatedAt.Equal(out[b].CreatedAt) {
			return out[a].CreatedAt.After(out[b].CreatedAt)
		}
		return out[a].ID > out[b].ID
	})
	return out
}

// Bundle opens a finished export's bundle; ErrNoBundle when there is none (yet).
func (m *Manager) Bundle(id string) (*os.File, Job, error) {
	j, err := m.Get(id)
	if err != nil {
		return nil, Job{}, err
	}
	if j.State != StateDone {
		return nil, j, fmt.Errorf("export %s is %s: %w", id, j.State, ErrNoBundle)
	}
	f, err := os.Open(m.bundlePath(id))
	if err != nil {
		m.log.Warn("exports: a finished export's bundle cannot be opened", "export_id", id, "error", err)
		return nil, j, fmt.Errorf("export %s: %w: its file is gone from this control plane instance", id, ErrNoBundle)
	}
	return f, j, nil
}

func (m *Manager) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			m.interruptQueued()
			return
		case id := <-m.queue:
			m.run(ctx, id)
		}
	}
}

// interruptQueued fails what waits when the worker stops (the next process would anyway).
func (m *Manager) interruptQueued() {
	m.mu.Lock()
	m.closed = true // Submit queues nothing more
	m.mu.Unlock()
	for {
		select {
		case id := <-m.queue:
			m.finish(id, func(j *Job) {
				j.State, j.Error = StateFailed, "interrupted: the control plane stopped before the export ran; ask again"
			})
		default:
			return
		}
	}
}

// update changes a job under the lock; persist saves its record.
func (m *Manager) update(id string, persist bool, f func(*Job)) (Job, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[id]
	if !ok {
		return Job{}, false
	}
	f(j)
	if persist {
		if err := m.save(j); err != nil {
			m.log.Error("exports: the export's record was not saved", "export_id", id, "error", err)
		}
	}
	return *j, true
}

func (m *Manager) finish(id string, f func(*Job)) {
	now := m.cfg.Now().UTC()
	m.update(id, true, func(j *Job) {
		f(j)
		j.FinishedAt = &now
	})
}

func (m *Manager) run(ctx context.Context, id string) {
	now := m.cfg.Now().UTC()
	j, ok := m.update(id, true, func(j *Job) { j.State, j.StartedAt = StateRunning, &now })
	if !ok {
		return
	}
	log := m.log.With("export_id", id, "correlation_id", j.correlationID, "request_id", j.requestID)
	res, err := m.export(ctx, j)
	if err != nil {
		// Export writes through a temporary file renamed only when complete; a bundle whose
		// record could not be appended is not one: nothing partial stays downloadable.
		_ = os.Remove(m.bundlePath(id))
		// Said to whoever asked: the reason (a bad window, a full disk), not where the data dir is.
		msg := strings.ReplaceAll(err.Error(), m.cfg.Dir+string(filepath.Separator), "")
		if ctx.Err() != nil {
			msg = "interrupted: the control plane stopped before the export finished; ask again"
		}
		log.Warn("export failed", "error", err)
		m.finish(id, func(j *Job) { j.State, j.Error = StateFailed, msg })
		return
	}
	log.Info("export done", "records", res.Manifest.Records, "bytes", res.Bytes, "position", res.Position)
	m.finish(id, func(j *Job) {
		first, last, pos := res.Manifest.From, res.Manifest.To, res.Position
		j.State, j.FirstPosition, j.LastPosition, j.Position = StateDone, &first, &last, &pos
		j.Records, j.Bytes, j.BundleSHA256 = res.Manifest.Records, res.Bytes, res.BundleSHA256
	})
}

func (m *Manager) export(ctx context.Context, j Job) (evidence.ExportResult, error) {
	key, err := m.cfg.Key(ctx)
	if err != nil {
		return evidence.ExportResult{}, fmt.Errorf("export: the log key: %w", err)
	}
	cfg := evidence.ExportConfig{Pool: m.cfg.Pool, Log: m.cfg.Log, Key: key, Actor: j.RequestedBy, RequestID: j.requestID,
		CorrelationID: j.correlationID, ExportID: j.ID, Now: m.cfg.Now, Personal: m.cfg.Personal,
		Progress: func(done, total uint64) {
			m.update(j.ID, false, func(j *Job) { j.RecordsDone, j.RecordsTotal = done, total })
		}}
	return evidence.Export(ctx, cfg, j.window, m.bundlePath(j.ID))
}

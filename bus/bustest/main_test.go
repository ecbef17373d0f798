package bustest_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/tunnelplane/tunnelplane/bus/controlbus"
	"github.com/tunnelplane/tunnelplane/bus/nodebus"
	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/natstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// pgx's pool health checker winds down asynchronously after Close.
		goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"),
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}

// testLogger keeps test output to warnings and errors. It writes to stderr rather than t.Log:
// the NATS server logs from its own goroutines, possibly after a test ended.
func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("TUNNELPLANE_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// externalNATS, when set (TUNNELPLANE_TEST_NATS_URL), is the server the tests run against instead
// of an embedded one: make test runs this package a second time against this machine's NATS
// (the Debian package, 2.9.x). Each test then has its own cluster name (nm), so its streams never
// meet another test's or another installation's, and they are deleted when it ends.
var externalNATS = os.Getenv("TUNNELPLANE_TEST_NATS_URL")

// runID makes this run's cluster names unique on a shared server.
var runID = uuid.NewString()

// nm is the test's NATS names: the default installation's on an embedded server, a cluster name
// of its own (from its top-level name) on the external one.
func nm(t testing.TB) wire.Names {
	if externalNATS == "" {
		return wire.Names{}
	}
	top, _, _ := strings.Cut(t.Name(), "/")
	sum := sha256.Sum256([]byte(runID + top))
	n, err := wire.NewNames("t" + hex.EncodeToString(sum[:6]))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// embeddedOnly skips a test that stops or restarts the NATS server when the tests run against the
// shared external one.
func embeddedOnly(t testing.TB) {
	t.Helper()
	if externalNATS != "" {
		t.Skip("stops the NATS server: runs against the embedded one only")
	}
}

// natsEnv is a NATS server with the test's streams in place: embedded, or the external one.
type natsEnv struct {
	t    testing.TB
	dir  string
	srv  *controlbus.Embedded
	port int
}

func startNATS(t testing.TB, sc controlbus.StreamsConfig) *natsEnv {
	t.Helper()
	e := &natsEnv{t: t, dir: t.TempDir()}
	if externalNATS == "" {
		e.start(-1)
	}
	nc := connect(t, e.url())
	if externalNATS != "" {
		t.Cleanup(func() {
			if err := natstest.RemoveStreams(nc, nm(t)); err != nil {
				t.Errorf("clean up NATS: %v", err)
			}
		})
	}
	sc.Names = nm(t)
	if err := controlbus.EnsureStreams(ctxT(t), js(t, nc), sc); err != nil {
		t.Fatalf("ensure streams: %v", err)
	}
	return e
}

func (e *natsEnv) start(port int) {
	e.t.Helper()
	srv, err := controlbus.StartEmbedded(ctxT(e.t), controlbus.EmbeddedConfig{Dir: e.dir, Port: port, Logger: testLogger()})
	if err != nil {
		e.t.Fatalf("start embedded nats: %v", err)
	}
	e.srv, e.port = srv, srv.Port()
	e.t.Cleanup(srv.Shutdown)
}

// restart starts a new server on the same port and store directory.
func (e *natsEnv) restart() {
	e.t.Helper()
	e.start(e.port)
}

func (e *natsEnv) url() string {
	if externalNATS != "" {
		return externalNATS
	}
	return fmt.Sprintf("nats://127.0.0.1:%d", e.port)
}

func connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := wire.Connect(url, wire.ConnectConfig{Name: t.Name(), Logger: testLogger(),
		Options: []nats.Option{nats.ReconnectWait(100 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func js(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	j, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// storeEnv is a fresh database with an initialised log and a started store that knows the
// domain's event types.
type storeEnv struct {
	url   string
	store *eventstore.Store
}

func domainRegistry(t testing.TB) *eventstore.Registry {
	t.Helper()
	var types []eventstore.EventType
	for _, et := range domain.EventTypes() {
		types = append(types, eventstore.EventType{Name: et.Name, SchemaVersion: et.SchemaVersion, Upcasters: et.Upcasters})
	}
	reg, err := eventstore.NewRegistry(types...)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func newStore(t testing.TB) *storeEnv {
	t.Helper()
	u := pgtest.NewDatabase(t)
	key, err := eventstore.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	pool := pgtest.Pool(t, u)
	if _, err := eventstore.Init(ctxT(t), pool, key, time.Now()); err != nil {
		t.Fatalf("init log: %v", err)
	}
	st, err := eventstore.New(eventstore.Config{Pool: pool, Key: key, Registry: domainRegistry(t),
		PollInterval: 100 * time.Millisecond, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(ctxT(t)); err != nil {
		t.Fatalf("start store: %v", err)
	}
	t.Cleanup(st.Stop)
	return &storeEnv{url: u, store: st}
}

// enrollNode registers a fresh node event key in the log and returns the node id and key.
func (s *storeEnv) enrollNode(t testing.TB) (string, *eventstore.SigningKey) {
	t.Helper()
	nodeID := uuid.NewString()
	key, err := eventstore.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.AddKey(ctxT(t), nil, eventstore.PurposeNode, nodeID, key); err != nil {
		t.Fatalf("add node key: %v", err)
	}
	return nodeID, key
}

func (s *storeEnv) verifyOK(t testing.TB) eventstore.VerifyReport {
	t.Helper()
	rep, err := eventstore.Verify(ctxT(t), pgtest.Pool(t, s.url), eventstore.VerifyOptions{})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if !rep.OK() {
		t.Fatalf("verify: %v", rep.Failure)
	}
	return rep
}

// streamRecords reads a whole stream.
func (s *storeEnv) streamRecords(t testing.TB, stream string) []eventstore.Record {
	t.Helper()
	var out []eventstore.Record
	for from := uint64(1); ; {
		recs, err := s.store.ReadStream(ctxT(t), stream, from, 1000)
		if err != nil {
			t.Fatalf("read %s: %v", stream, err)
		}
		out = append(out, recs...)
		if len(recs) < 1000 {
			return out
		}
		from = recs[len(recs)-1].StreamVersion + 1
	}
}

func startIngester(t testing.TB, s *storeEnv, nc *nats.Conn, reg prometheus.Registerer) *controlbus.Ingester {
	t.Helper()
	in, err := controlbus.NewIngester(controlbus.IngesterConfig{Names: nm(t), Store: s.store, Conn: nc, Registerer: reg, Logger: testLogger(),
		RetryMin: 100 * time.Millisecond, RetryMax: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Start(ctxT(t)); err != nil {
		t.Fatalf("start ingester: %v", err)
	}
	t.Cleanup(in.Stop)
	return in
}

func newPublisher(t testing.TB, nodeID string, key *eventstore.SigningKey, nc *nats.Conn, dir string, reg prometheus.Registerer) *nodebus.Publisher {
	t.Helper()
	p, err := nodebus.NewPublisher(nodebus.PublisherConfig{Names: nm(t), NodeID: nodeID, Key: key, Conn: nc, SpoolDir: dir, Registerer: reg,
		Logger: testLogger(), PublishTimeout: 2 * time.Second, RetryMax: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// metric reads one sample (counter or gauge) from a registry; labels select within a vector.
func metric(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	return 0
}

func usage(nodeID string, n int) domain.UsageRecorded {
	now := time.Now().UTC().Truncate(time.Second)
	return domain.UsageRecorded{NodeID: nodeID, OrgID: uuid.NewString(), TunnelID: uuid.NewString(),
		WindowStart: now.Add(-time.Minute), WindowEnd: now, Requests: int64(n), BytesIn: int64(100 * n), BytesOut: int64(1000 * n)}
}

func mustKey(t testing.TB) *eventstore.SigningKey {
	t.Helper()
	k, err := eventstore.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func errorsf(format string, args ...any) error { return fmt.Errorf(format, args...) }

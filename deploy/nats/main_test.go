package natsdeploy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
	"golang.org/x/crypto/bcrypt"

	"github.com/tunnelplane/tunnelplane/bus/controlbus"
	"github.com/tunnelplane/tunnelplane/bus/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("TUNNELPLANE_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// checkFor polls f until it returns nil or the timeout passes (nats-server's test idiom).
func checkFor(t testing.TB, timeout, interval time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(interval)
	}
}

// configFiles are what a deployment copies from this directory; the test runs on the copy.
var configFiles = []string{"nats-server.conf", "nats-cluster.conf", "render-accounts.sh",
	"templates/tunnelplane-account.conf.tmpl", "templates/node-account.conf.tmpl"}

// copyConfig copies the configuration to a fresh directory.
func copyConfig(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range configFiles {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// renderAccounts runs render-accounts.sh on the credentials list; it returns the script's
// output, its error output and whether it succeeded.
func renderAccounts(t testing.TB, dir, credentials string) (stdout, stderr string, ok bool) {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("render-accounts.sh needs bash: %v", err)
	}
	list := filepath.Join(t.TempDir(), "credentials.txt")
	if err := os.WriteFile(list, []byte(credentials), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	cmd := exec.Command(bash, filepath.Join(dir, "render-accounts.sh"), list)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run render-accounts.sh: %v", err)
	}
	return out.String(), errOut.String(), err == nil
}

// secret is a fresh password; hex, so it needs no escaping in a URL.
func secret(t testing.TB) string {
	t.Helper()
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// hash is the bcrypt hash render-accounts.sh wants. The lowest cost keeps the many connects of a
// test (and its -race run) fast; operators use the default cost or higher.
func hash(t testing.TB, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// deployment is one installation on a real nats-server started from this directory's
// nats-server.conf (a copy, with accounts.conf rendered by render-accounts.sh), its streams
// created by the product's EnsureStreams over the installation's control credential.
type deployment struct {
	srv         *server.Server
	port        int
	names       wire.Names        // the installation's NATS names (its cluster)
	controlUser string            // "control", or "control-<cluster>"
	control     string            // the control credential's password
	nodes       map[string]string // node id → password
}

// installation is one section of the credentials list: a cluster name ("" for the default
// installation) and its nodes.
type installation struct {
	cluster string
	nodeIDs []string
}

func deploy(t testing.TB, nodeIDs ...string) *deployment {
	t.Helper()
	return deployAll(t, installation{nodeIDs: nodeIDs})[0]
}

// deployAll starts one server for several installations, rendered from one credentials list.
func deployAll(t testing.TB, installs ...installation) []*deployment {
	t.Helper()
	creds := "# test credentials\n"
	ds := make([]*deployment, len(installs))
	for i, in := range installs {
		names, err := wire.NewNames(in.cluster)
		if err != nil {
			t.Fatal(err)
		}
		d := &deployment{names: names, controlUser: "control", control: secret(t), nodes: map[string]string{}}
		if in.cluster != "" {
			d.controlUser = "control-" + in.cluster
			creds += "cluster " + in.cluster + "\n"
		}
		creds += "control " + hash(t, d.control) + "\n"
		for _, id := range in.nodeIDs {
			d.nodes[id] = secret(t)
			creds += "node " + id + " " + hash(t, d.nodes[id]) + "\n"
		}
		ds[i] = d
	}
	dir := copyConfig(t)
	accounts, stderr, ok := renderAccounts(t, dir, creds)
	if !ok {
		t.Fatalf("render-accounts.sh refused the test's credentials: %s", stderr)
	}
	if strings.Contains(accounts, "${") {
		t.Fatalf("render-accounts.sh left a placeholder:\n%s", accounts)
	}
	if err := os.WriteFile(filepath.Join(dir, "accounts.conf"), []byte(accounts), 0o600); err != nil {
		t.Fatal(err)
	}

	opts, err := server.ProcessConfigFile(filepath.Join(dir, "nats-server.conf"))
	if err != nil {
		t.Fatalf("nats-server.conf: %v", err)
	}
	if !opts.JetStream || opts.NoAuthUser != "" || opts.MaxPayload != 1<<20 {
		t.Fatalf("nats-server.conf: jetstream %v, no_auth_user %q, max_payload %d; want JetStream, no anonymous user, 1 MiB",
			opts.JetStream, opts.NoAuthUser, opts.MaxPayload)
	}
	// Only what a test machine needs differently: a free port, no monitoring port, a temporary
	// store.
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
	opts.StoreDir = t.TempDir()
	opts.NoSigs = true
	debug := os.Getenv("TUNNELPLANE_TEST_DEBUG") != ""
	opts.NoLog = !debug
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("new nats-server: %v", err)
	}
	if debug {
		srv.ConfigureLogger()
	}
	srv.Start()
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready within 10s")
	}
	for _, d := range ds {
		d.srv, d.port = srv, srv.Addr().(*net.TCPAddr).Port
		control := d.dialControl(t)
		// The product's own stream setup, over the control credential: that it succeeds is the
		// "manage the streams" permission.
		if err := controlbus.EnsureStreams(ctxT(t), control.js, controlbus.StreamsConfig{Names: d.names}); err != nil {
			t.Fatalf("EnsureStreams with the control credential of %q: %v", d.names.Cluster(), err)
		}
		control.noViolations(t)
	}
	return ds
}

// url is the --nats-url a holder of the credential passes to tunnelplane.
func (d *deployment) url(user, password string) string {
	u := url.URL{Scheme: "nats", User: url.UserPassword(user, password), Host: fmt.Sprintf("127.0.0.1:%d", d.port)}
	return u.String()
}

func (d *deployment) controlURL() string { return d.url(d.controlUser, d.control) }

func (d *deployment) nodeURL(t testing.TB, id string) string {
	t.Helper()
	pw, ok := d.nodes[id]
	if !ok {
		t.Fatalf("node %s has no credential", id)
	}
	return d.url("node-"+id, pw)
}

func (d *deployment) dialControl(t testing.TB) *client { return dial(t, d.controlURL(), d.controlUser) }

func (d *deployment) dialNode(t testing.TB, id string) *client {
	return dial(t, d.nodeURL(t, id), "node-"+id)
}

// client is a connection, dialled the way tunnelplane dials (wire.Connect with the credential in
// the URL), that records the permission violations the server reports to it.
type client struct {
	name string
	nc   *nats.Conn
	js   jetstream.JetStream
	rec  *violations
}

// violations collects the server's permission errors ("Permissions Violation for Publish to
// "x"" and "… for Subscription to "x"") from every connection it is installed on.
type violations struct {
	mu   sync.Mutex
	errs []string
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.errs = append(v.errs, err.Error())
}

func (v *violations) all() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.errs)
}

func (v *violations) option() nats.Option { return nats.ErrorHandler(v.handler) }

func dial(t testing.TB, natsURL, name string) *client {
	t.Helper()
	rec := &violations{}
	nc, err := wire.Connect(natsURL, wire.ConnectConfig{Name: "test-" + name, Logger: testLogger(), Options: []nats.Option{rec.option()}})
	if err != nil {
		t.Fatalf("connect as %s: %v", name, err)
	}
	t.Cleanup(nc.Close)
	// wire.Connect returns before the first connect succeeds (it retries forever).
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !nc.IsConnected() {
			return fmt.Errorf("%s: %s (last error %v)", name, nc.Status(), nc.LastError())
		}
		return nil
	})
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &client{name: name, nc: nc, js: js, rec: rec}
}

// refusedTo waits until the server has told c that op ("Publish" or "Subscription") on subject
// is not permitted.
func (c *client) refusedTo(t testing.TB, op, subject string) {
	t.Helper()
	want := fmt.Sprintf("Permissions Violation for %s to %q", op, subject)
	if err := c.nc.Flush(); err != nil {
		t.Fatalf("%s: flush: %v", c.name, err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		for _, e := range c.rec.all() {
			if strings.Contains(e, want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no permission violation for %s to %q; the server permitted it (violations seen: %q)", c.name, op, subject, c.rec.all())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *client) noViolations(t testing.TB) {
	t.Helper()
	if err := c.nc.Flush(); err != nil {
		t.Fatalf("%s: flush: %v", c.name, err)
	}
	if v := c.rec.all(); len(v) > 0 {
		t.Errorf("%s: permission violations: %q", c.name, v)
	}
}

// jetStreamState describes everything JetStream holds in the account: each stream's messages
// per subject and its consumers. Read with the control credential.
func jetStreamState(ctx context.Context, t testing.TB, js jetstream.JetStream) string {
	t.Helper()
	var b strings.Builder
	for _, name := range []string{def.EventsStream(), def.NodeFactsStream(), def.CommandsStream(), "KV_" + def.NodesBucket(), "KV_" + def.RoutesBucket()} {
		st, err := js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			fmt.Fprintf(&b, "%s: missing\n", name)
			continue
		}
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(">"))
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		subjects := make([]string, 0, len(info.State.Subjects))
		for s, n := range info.State.Subjects {
			subjects = append(subjects, fmt.Sprintf("%s=%d", s, n))
		}
		sort.Strings(subjects)
		var consumers []string
		names := st.ConsumerNames(ctx)
		for n := range names.Name() {
			consumers = append(consumers, n)
		}
		if err := names.Err(); err != nil {
			t.Fatalf("consumers of %s: %v", name, err)
		}
		sort.Strings(consumers)
		fmt.Fprintf(&b, "%s: last seq %d, messages %v, consumers %v\n", name, info.State.LastSeq, subjects, consumers)
	}
	return b.String()
}

// subjectCount is how many messages stream holds on subject.
func subjectCount(ctx context.Context, t testing.TB, js jetstream.JetStream, stream, subject string) uint64 {
	t.Helper()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	return info.State.Subjects[subject]
}

// def is the default installation's NATS names, the ones the account templates grant.
var def wire.Names

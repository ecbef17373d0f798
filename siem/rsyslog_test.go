package siem_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/siem"
)

// rsyslog is a real rsyslogd (Debian's rsyslog and rsyslog-gnutls) listening with imtcp over
// TLS on a free port, writing what it receives to a file, one line per message:
// "MSGID STRUCTURED-DATA MSG".
type rsyslog struct {
	bin            string
	dir, conf, out string
	port           int
	cmd            *exec.Cmd
	pool           *x509.CertPool
}

func startRsyslog(t *testing.T) *rsyslog {
	t.Helper()
	bin, err := exec.LookPath("rsyslogd")
	if err != nil {
		bin = "/usr/sbin/rsyslogd"
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skip("rsyslogd is not installed (make deps installs rsyslog and rsyslog-gnutls)")
	}
	if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so"); err != nil {
		if m, _ := filepath.Glob("/usr/lib/*/rsyslog/lmnsd_gtls.so"); len(m) == 0 {
			t.Skip("rsyslog-gnutls is not installed (make deps installs it)")
		}
	}
	dir := t.TempDir()
	r := &rsyslog{dir: dir, conf: filepath.Join(dir, "rsyslog.conf"), out: filepath.Join(dir, "out.log")}
	r.pool = writeTestPKI(t, dir)
	r.bin = bin
	r.start(t, bin)
	t.Cleanup(func() { r.stop() })
	return r
}

// writeConf configures rsyslog to listen on port (0: a free one, written to the port file).
func (r *rsyslog) writeConf(t *testing.T, port int) {
	t.Helper()
	conf := fmt.Sprintf(`global(workDirectory=%[1]q maxMessageSize="256k"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile=%[2]q defaultNetstreamDriverCertFile=%[3]q defaultNetstreamDriverKeyFile=%[4]q)
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" port="%[7]d" listenPortFileName=%[5]q)
template(name="line" type="string" string="%%msgid%% %%structured-data%% %%msg%%\n")
action(type="omfile" file=%[6]q template="line")
`, r.dir, filepath.Join(r.dir, "ca.pem"), filepath.Join(r.dir, "server.pem"), filepath.Join(r.dir, "server-key.pem"), filepath.Join(r.dir, "port"), r.out, port)
	if err := os.WriteFile(r.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
}

// start runs rsyslogd: on a free port the first time, on the same port after that.
func (r *rsyslog) start(t *testing.T, bin string) {
	t.Helper()
	_ = os.Remove(filepath.Join(r.dir, "port"))
	r.writeConf(t, r.port)
	var stderr strings.Builder
	r.cmd = exec.Command(bin, "-n", "-f", r.conf, "-i", filepath.Join(r.dir, "pid"))
	r.cmd.Stdout, r.cmd.Stderr = &stderr, &stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(r.dir, "port"))
		if p, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil && p > 0 {
			r.port = p
			return
		}
		if r.port > 0 {
			if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)), time.Second); err == nil {
				c.Close()
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("rsyslogd did not listen within 15s: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *rsyslog) stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGCONT) // a frozen one would not hear SIGTERM
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-done
	}
	r.cmd = nil
}

func (r *rsyslog) kill() {
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

func (r *rsyslog) sender(t *testing.T, dial func(ctx context.Context, network, address string) (net.Conn, error)) *siem.SyslogTLS {
	t.Helper()
	s, err := siem.NewSyslogTLS(siem.SyslogTLSConfig{Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)),
		TLS: &tls.Config{RootCAs: r.pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}, AckTimeout: 20 * time.Second, Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// received is what rsyslog wrote: sink sequence → event ids seen with it.
func (r *rsyslog) received(t *testing.T) map[uint64][]string {
	t.Helper()
	f, err := os.Open(r.out)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := map[uint64][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		p := sdParams(sc.Text())
		seq, err := strconv.ParseUint(p["seq"], 10, 64)
		if err != nil {
			continue // a line cut by a kill
		}
		got[seq] = append(got[seq], p["eventId"])
	}
	return got
}

// tail is the last n bytes rsyslog wrote.
func (r *rsyslog) tail(t *testing.T, n int64) string {
	t.Helper()
	f, err := os.Open(r.out)
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	off := max(st.Size()-n, 0)
	b := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func ocsfBody(e siem.Entry) ([]byte, error) { return siem.OCSF(e, siem.DefaultProduct("test")) }

// sdParams are the structured data's parameters of a line rsyslog wrote (MSGID [SD] MSG).
func sdParams(line string) map[string]string {
	p := map[string]string{}
	if i := strings.Index(line, "] "); i >= 0 {
		line = line[:i+1]
	}
	for _, m := range sdParam.FindAllStringSubmatch(line, -1) {
		p[m[1]] = m[2]
	}
	return p
}

// messages are n syslog messages of events in format (siem.Raw or OCSF) with sequence numbers
// from first, each padded with pad bytes after its event.
func messages(t *testing.T, format func(siem.Entry) ([]byte, error), first uint64, n, pad int) (msgs [][]byte, ids map[uint64]string) {
	t.Helper()
	ids = map[uint64]string{}
	all := samples()
	types := allTypes()
	for i := range n {
		seq := first + uint64(i)
		rec := record(t, seq, all[types[i%len(types)]], domain.Metadata{Actor: "alice"})
		e := siem.Entry{Record: rec, Seq: seq}
		body, err := format(e)
		if err != nil {
			t.Fatal(err)
		}
		body = append(body, strings.Repeat(" ", pad)...)
		sev, _ := siem.SeverityID(e)
		m, err := siem.Syslog(siem.SyslogConfig{Hostname: "cp-1"}, e, sev, body)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
		ids[seq] = rec.EventID.String()
	}
	return msgs, ids
}

// A batch delivered to rsyslog over TLS arrives whole: every message once, as one message each
// (octet counting), with its event id and sequence in rsyslog's parse of the structured data.
func TestBatchesReachRsyslogOverTLS(t *testing.T) {
	t.Parallel()
	r := startRsyslog(t)
	s := r.sender(t, nil)
	msgs, ids := messages(t, ocsfBody, 1, 3000, 0)
	if err := s.Deliver(context.Background(), msgs); err != nil {
		t.Fatalf("deliver: %v", err)
	}
	var got map[uint64][]string
	deadline := time.Now().Add(20 * time.Second)
	for {
		got = r.received(t)
		if len(got) == len(ids) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for seq, id := range ids {
		if len(got[seq]) != 1 || got[seq][0] != id {
			t.Fatalf("sequence %d: rsyslog has %q, want once %s (%d of %d sequences arrived)", seq, got[seq], id, len(got), len(ids))
		}
	}
}

// Delivery counts only what the receiver confirmed: a receiver that is gone, or dies while a
// batch is on its way, is an error to retry, never a silent success; after a restart the
// retried batch arrives, and the duplicates carry the same event ids.
func TestAnUnconfirmedBatchIsAnErrorAndItsRetryArrives(t *testing.T) {
	t.Parallel()
	r := startRsyslog(t)
	bin := r.cmd.Path
	// The sender's connection counts what it wrote, so the receiver can be stopped mid-batch.
	var written atomic.Int64
	s := r.sender(t, func(ctx context.Context, network, address string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, address)
		if err != nil {
			return nil, err
		}
		return countingConn{Conn: c, n: &written}, nil
	})
	// A batch far larger than the socket buffers between the two (40 MB).
	msgs, ids := messages(t, siem.Raw, 1, 20000, 2<<10)
	done := make(chan error, 1)
	go func() { done <- s.Deliver(context.Background(), msgs) }()
	// Once 8 MB are on their way, freeze the receiver (the sender's writes then stall on full
	// buffers with most of the batch unsent), and kill it.
	deadline := time.Now().Add(20 * time.Second)
	for written.Load() < 8<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d bytes written within 20s", written.Load())
		}
		time.Sleep(time.Millisecond)
	}
	_ = r.cmd.Process.Signal(syscall.SIGSTOP)
	select {
	case err := <-done:
		t.Fatalf("the batch ended before the receiver was frozen (%v): the test proved nothing; make the batch larger", err)
	case <-time.After(200 * time.Millisecond):
	}
	r.kill()
	if err := <-done; !errors.Is(err, siem.ErrNotAcknowledged) {
		t.Fatalf("a batch cut by the receiver's death: %v, want ErrNotAcknowledged", err)
	}
	if err := s.Deliver(context.Background(), msgs[:1]); !errors.Is(err, siem.ErrNotAcknowledged) {
		t.Fatalf("a batch to no receiver: %v, want ErrNotAcknowledged", err)
	}
	// The same port again, so the sender's address holds.
	r.start(t, bin)
	s = r.sender(t, nil)
	if err := s.Deliver(context.Background(), msgs); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	// rsyslog writes in order: once the retry's last message is in the file, all of it is.
	last := fmt.Sprintf(`seq="%d"`, len(msgs))
	deadline = time.Now().Add(60 * time.Second)
	for !strings.Contains(r.tail(t, 64<<10), last) {
		if time.Now().After(deadline) {
			t.Fatal("the retry's last message did not arrive within 60s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	got := r.received(t)
	dups := 0
	for seq, id := range ids {
		if len(got[seq]) == 0 {
			t.Fatalf("sequence %d never arrived", seq)
		}
		for _, g := range got[seq] {
			if g != id {
				t.Fatalf("sequence %d arrived with event id %s, want %s", seq, g, id)
			}
		}
		dups += len(got[seq]) - 1
	}
	if dups == 0 {
		t.Fatal("no duplicates: the first attempt delivered nothing before the kill, so the test proved nothing")
	}
}

// countingConn counts the bytes written through it.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// writeTestPKI writes ca.pem, server.pem and server-key.pem (for localhost and 127.0.0.1) to dir
// and returns a pool trusting the CA.
func writeTestPKI(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, block := range map[string]*pem.Block{
		"ca.pem":         {Type: "CERTIFICATE", Bytes: caDER},
		"server.pem":     {Type: "CERTIFICATE", Bytes: leafDER},
		"server-key.pem": {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return pool
}

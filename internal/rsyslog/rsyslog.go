// Package rsyslog runs a private rsyslogd (Debian's rsyslog and rsyslog-gnutls) that receives
// syslog over TLS (imtcp, RFC 5425 framing) on a loopback port, with a certificate authority of
// its own, and writes each message to a file as one line "MSGID STRUCTURED-DATA MSG". It is the
// real receiver of the SIEM tests and of `bench siem`; it owns nothing else.
package rsyslog

import (
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
	"syscall"
	"time"

	"github.com/tunnelplane/tunnelplane/internal/logbuf"
)

// ErrNotInstalled: rsyslogd or its TLS driver is missing (make deps installs rsyslog and
// rsyslog-gnutls).
var ErrNotInstalled = errors.New("rsyslogd with its TLS driver is not installed (apt-get install rsyslog rsyslog-gnutls)")

// Server is one private rsyslogd.
type Server struct {
	// Out is the file it writes; Port its TLS port (chosen at the first Start, kept after).
	Out  string
	Port int
	// Direct makes rsyslogd write each message to Out before it reads further (a direct main
	// queue), so that closing a connection after the sender's close_notify confirms that what was
	// sent is in the file, even if rsyslogd is killed the moment after. Set it before Start. The
	// default, an in-memory queue, is what rsyslog ships with: what it read but did not write yet
	// dies with it.
	Direct bool

	dir, bin, conf string
	pool           *x509.CertPool
	cmd            *exec.Cmd
	stderr         *logbuf.Buffer
}

// New prepares a server in dir (certificates, configuration); Start runs it.
func New(dir string) (*Server, error) {
	bin, err := exec.LookPath("rsyslogd")
	if err != nil {
		bin = "/usr/sbin/rsyslogd"
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, ErrNotInstalled
	}
	if m, _ := filepath.Glob("/usr/lib/*/rsyslog/lmnsd_gtls.so"); len(m) == 0 {
		return nil, ErrNotInstalled
	}
	s := &Server{dir: dir, bin: bin, conf: filepath.Join(dir, "rsyslog.conf"), Out: filepath.Join(dir, "out.log")}
	if s.pool, err = writePKI(dir); err != nil {
		return nil, err
	}
	return s, nil
}

// TLSConfig trusts the server's certificate authority.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: s.pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// Address is the server's host:port.
func (s *Server) Address() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

// Start runs rsyslogd and returns once it listens: on a free port the first time, on the same
// port after that.
func (s *Server) Start() error {
	portFile := filepath.Join(s.dir, "port")
	_ = os.Remove(portFile)
	queue := ""
	if s.Direct {
		queue = `main_queue(queue.type="Direct")` + "\n"
	}
	conf := queue + fmt.Sprintf(`global(workDirectory=%[1]q maxMessageSize="256k"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile=%[2]q defaultNetstreamDriverCertFile=%[3]q defaultNetstreamDriverKeyFile=%[4]q)
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" port="%[7]d" listenPortFileName=%[5]q)
template(name="line" type="string" string="%%msgid%% %%structured-data%% %%msg%%\n")
action(type="omfile" file=%[6]q template="line")
`, s.dir, filepath.Join(s.dir, "ca.pem"), filepath.Join(s.dir, "server.pem"), filepath.Join(s.dir, "server-key.pem"), portFile, s.Out, s.Port)
	if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
		return err
	}
	s.stderr = &logbuf.Buffer{}
	s.cmd = exec.Command(s.bin, "-n", "-f", s.conf, "-i", filepath.Join(s.dir, "pid"))
	s.cmd.Stdout, s.cmd.Stderr = s.stderr, s.stderr
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start rsyslogd: %w", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, err := os.ReadFile(portFile)
		if p, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil && p > 0 {
			s.Port = p
			return nil
		}
		if s.Port > 0 {
			if c, err := net.DialTimeout("tcp", s.Address(), time.Second); err == nil {
				c.Close()
				return nil
			}
		}
		if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("rsyslogd did not listen within 15s: %s", s.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop ends rsyslogd (SIGTERM, after SIGCONT in case it is frozen; killed after 10 s). Safe to
// call twice.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	resume(s.cmd.Process) // a frozen one would not hear SIGTERM
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
	s.cmd = nil
}

// Kill ends rsyslogd with SIGKILL: whatever it read and did not write is lost.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Freeze stops rsyslogd (SIGSTOP): connections stay open and nothing is read.
func (s *Server) Freeze() {
	if s.cmd != nil {
		freeze(s.cmd.Process)
	}
}

// writePKI writes ca.pem, server.pem and server-key.pem (for localhost and 127.0.0.1) to dir and
// returns a pool trusting the CA.
func writePKI(dir string) (*x509.CertPool, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tunnelplane test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	for name, block := range map[string]*pem.Block{
		"ca.pem":         {Type: "CERTIFICATE", Bytes: caDER},
		"server.pem":     {Type: "CERTIFICATE", Bytes: leafDER},
		"server-key.pem": {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			return nil, err
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return pool, nil
}

package natsdeploy_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// render-accounts.sh writes nothing when its input could weaken or break the configuration:
// nats-server takes a plain-text password as is, and a node id becomes part of subjects and an
// account name.
func TestRenderAccountsRefusesUnsafeInput(t *testing.T) {
	t.Parallel()
	dir := copyConfig(t)
	h := hash(t, secret(t))
	id := newNodeID()
	control := "control " + h + "\n"
	for _, tc := range []struct{ name, list, complaint string }{
		{"a plain-text control password", "control hunter2\n", "not a bcrypt hash"},
		{"a plain-text node password", control + "node " + id + " hunter2\n", "not a bcrypt hash"},
		{"a hash with more after it", control + "node " + id + " " + h + `"}]` + "\n", "not a bcrypt hash"},
		{"an upper-case node id", control + "node " + strings.ToUpper(id) + " " + h + "\n", "not a lower-case UUID"},
		{"a node id that is a wildcard", control + "node * " + h + "\n", "not a lower-case UUID"},
		{"a node id that is a subject", control + "node a.b " + h + "\n", "not a lower-case UUID"},
		{"a node listed twice", control + "node " + id + " " + h + "\nnode " + id + " " + h + "\n", "listed twice"},
		{"two control credentials", control + control, "listed twice"},
		{"no control credential", "node " + id + " " + h + "\n", "no control credential"},
		{"an unknown kind", control + "admin " + h + "\n", "unknown kind"},
		{"a node without a hash", control + "node " + id + "\n", "want: node <node-id> <bcrypt-hash>"},
		{"a cluster name --cluster refuses", control + "cluster Prod_EU\n" + control, "not a cluster name"},
		{"a cluster name that is a subject", control + "cluster a.>\n" + control, "not a cluster name"},
		{"a cluster listed twice", "cluster eu\n" + control + "cluster eu\n" + control, "cluster eu: listed twice"},
		{"a cluster without its control credential", control + "cluster eu\nnode " + id + " " + h + "\n", "no control credential for cluster eu"},
		{"default nodes without a control credential", "node " + id + " " + h + "\ncluster eu\n" + control, "no control credential"},
		{"a node in two clusters", control + "node " + id + " " + h + "\ncluster eu\n" + control + "node " + id + " " + h + "\n", "listed twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, ok := renderAccounts(t, dir, tc.list)
			if ok || out != "" {
				t.Fatalf("accepted (exit 0 or output written):\n%s", out)
			}
			if !strings.Contains(stderr, tc.complaint) {
				t.Errorf("stderr %q does not say %q", stderr, tc.complaint)
			}
		})
	}
	// Comments and blank lines are fine, and every node gets its account.
	out, stderr, ok := renderAccounts(t, dir, "# cluster A\n\n"+control+"node "+id+" "+h+"  # edge-1\n")
	if !ok {
		t.Fatalf("refused a valid list: %s", stderr)
	}
	if !strings.Contains(out, `"NODE_`+id+`" {`) || !strings.Contains(out, `user: "node-`+id+`"`) {
		t.Errorf("no account and user for node %s in:\n%s", id, out)
	}
}

// nats-cluster.conf (TLS for clients, routes authenticated by certificate, names and routes from
// the environment) is a configuration nats-server accepts, with the same accounts.
func TestClusterConfigParses(t *testing.T) {
	certs := t.TempDir()
	writeTestPKI(t, certs)
	t.Setenv("NATS_SERVER_NAME", "nats-0")
	t.Setenv("NATS_ROUTES", `["nats://nats-0.nats:6222","nats://nats-1.nats:6222","nats://nats-2.nats:6222"]`)
	t.Setenv("NATS_TLS_CERT", filepath.Join(certs, "server.pem"))
	t.Setenv("NATS_TLS_KEY", filepath.Join(certs, "server-key.pem"))
	t.Setenv("NATS_TLS_CA", filepath.Join(certs, "ca.pem"))

	dir := copyConfig(t)
	id := newNodeID()
	accounts, stderr, ok := renderAccounts(t, dir, "control "+hash(t, secret(t))+"\nnode "+id+" "+hash(t, secret(t))+"\n")
	if !ok {
		t.Fatal(stderr)
	}
	if err := os.WriteFile(filepath.Join(dir, "accounts.conf"), []byte(accounts), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(filepath.Join(dir, "nats-cluster.conf"))
	if err != nil {
		t.Fatalf("nats-cluster.conf: %v", err)
	}
	if opts.ServerName != "nats-0" || opts.Cluster.Name != "tunnelplane" || len(opts.Routes) != 3 || !opts.JetStream {
		t.Errorf("server %q, cluster %q, %d routes, JetStream %v; want nats-0, tunnelplane, 3, true",
			opts.ServerName, opts.Cluster.Name, len(opts.Routes), opts.JetStream)
	}
	if opts.TLSConfig == nil {
		t.Error("clients are not served over TLS (they send passwords)")
	}
	if opts.Cluster.TLSConfig == nil || opts.Cluster.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Error("routes do not require a certificate from the cluster's CA")
	}
	var names []string
	for _, a := range opts.Accounts {
		names = append(names, a.Name)
	}
	for _, want := range []string{"TUNNELPLANE", "NODE_" + id} {
		found := false
		for _, n := range names {
			found = found || n == want
		}
		if !found {
			t.Errorf("accounts %v lack %s", names, want)
		}
	}
}

// writeTestPKI writes a CA and a certificate for both server and client use, as a cluster's
// servers would share (ca.pem, server.pem, server-key.pem).
func writeTestPKI(t *testing.T, dir string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tunnelplane test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "nats-0"},
		DNSNames: []string{"nats-0.nats", "nats-1.nats", "nats-2.nats", "nats"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
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
}

package api

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
)

func TestParseJWKS(t *testing.T) {
	t.Parallel()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	e := b64(big.NewInt(int64(rk.E)).Bytes())
	good := `{"keys":[
		{"kty":"OKP","crv":"Ed25519","kid":"ed","x":"` + b64(pub) + `"},
		{"kty":"RSA","kid":"rsa","alg":"RS256","use":"sig","n":"` + b64(rk.N.Bytes()) + `","e":"` + e + `"},
		{"kty":"RSA","kid":"enc","use":"enc","n":"` + b64(rk.N.Bytes()) + `","e":"` + e + `"},
		{"kty":"EC","kid":"ec","crv":"P-256","x":"AA","y":"AA"},
		{"kty":"RSA","kid":"ps","alg":"PS256","n":"` + b64(rk.N.Bytes()) + `","e":"` + e + `"}]}`
	m, err := parseJWKS([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 || m["ed"] == nil || m["rsa"] == nil {
		t.Fatalf("keys: %v", m)
	}
	if got, ok := m["rsa"].(*rsa.PublicKey); !ok || got.N.Cmp(rk.N) != 0 || got.E != rk.E {
		t.Fatalf("rsa key: %v", m["rsa"])
	}
	for name, doc := range map[string]string{
		"not json":      `{`,
		"no kid":        `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + b64(pub) + `"}]}`,
		"short ed25519": `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a","x":"AAAA"}]}`,
		"weak rsa":      `{"keys":[{"kty":"RSA","kid":"a","n":"` + b64(small.N.Bytes()) + `","e":"` + e + `"}]}`,
		"bad exponent":  `{"keys":[{"kty":"RSA","kid":"a","n":"` + b64(rk.N.Bytes()) + `","e":"!!"}]}`,
		"huge exponent": `{"keys":[{"kty":"RSA","kid":"a","n":"` + b64(rk.N.Bytes()) + `","e":"` + b64(make([]byte, 9)) + `"}]}`,
	} {
		if _, err := parseJWKS([]byte(doc)); !errors.Is(err, ErrJWKS) {
			t.Errorf("%s: %v, want ErrJWKS", name, err)
		}
	}
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if m, err := loadJWKSFile(path); err != nil || len(m) != 2 {
		t.Fatalf("jwks file: %v %v", m, err)
	}
	if _, err := loadJWKSFile(path + ".missing"); err == nil {
		t.Fatal("a missing JWKS file loaded")
	}
}

// FuzzParseJWKS: a JWKS from a provider or a file never panics the parser, and whatever it
// accepts is a usable key.
func FuzzParseJWKS(f *testing.F) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"ed","x":"` + base64.RawURLEncoding.EncodeToString(pub) + `"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","kid":"r","n":"AQAB","e":"AQAB"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","kid":"r","n":"","e":""}],"x":1}`))
	f.Add([]byte(`{"keys":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseJWKS(b)
		if err != nil {
			return
		}
		for kid, k := range m {
			switch k := k.(type) {
			case ed25519.PublicKey:
				if len(k) != ed25519.PublicKeySize {
					t.Fatalf("%s: ed25519 key of %d bytes", kid, len(k))
				}
			case *rsa.PublicKey:
				if k.N.BitLen() < 2048 || k.E < 3 {
					t.Fatalf("%s: weak RSA key accepted", kid)
				}
			default:
				t.Fatalf("%s: %T", kid, k)
			}
		}
	})
}

// FuzzDecodeCursor: cursors come from clients; any string is either refused as a bad request or
// decodes to a short key of the list it was made for.
func FuzzDecodeCursor(f *testing.F) {
	f.Add("tunnels", encodeCursor("tunnels", "llm", "0193a3b0-0000-7000-8000-000000000000"))
	f.Add("audit", encodeCursor("audit", int64(42)))
	f.Add("orgs", "eyJrIjoib3JncyIsInYiOlsiYSJdfQ")
	f.Add("keys", "!!")
	f.Fuzz(func(t *testing.T, kind, v string) {
		key, err := decodeCursor(kind, v)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v is not a bad request", err)
			}
			return
		}
		if len(key) == 0 || len(key) > 4 {
			t.Fatalf("key of %d parts", len(key))
		}
		// A decoded cursor re-encodes to a cursor of the same list.
		if _, err := decodeCursor(kind, encodeCursor(kind, key...)); err != nil {
			t.Fatalf("re-encoded cursor refused: %v", err)
		}
	})
}

package api

import (
	"context"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
)

// maxJWKSBytes bounds a JWKS document (a provider publishes a handful of keys).
const maxJWKSBytes = 1 << 20

// ErrJWKS: a JWKS document cannot be used.
var ErrJWKS = errors.New("unusable JWKS")

type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	N   string `json:"n"`
	E   string `json:"e"`
}

// parseJWKS reads the signing keys of a JWK Set (RFC 7517): Ed25519 (kty OKP) and RSA keys of at
// least 2048 bits. Keys for encryption or of other types are skipped; a malformed key of a
// supported type is an error (a provider that publishes one has a problem worth seeing).
func parseJWKS(b []byte) (keyMap, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJWKS, err)
	}
	out := keyMap{}
	for i, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if k.Kid == "" {
			return nil, fmt.Errorf("%w: key %d has no kid", ErrJWKS, i)
		}
		switch k.Kty {
		case "OKP":
			if k.Crv != "Ed25519" || (k.Alg != "" && k.Alg != "EdDSA") {
				continue
			}
			x, err := base64.RawURLEncoding.DecodeString(k.X)
			if err != nil || len(x) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("%w: key %q: x is not a base64url Ed25519 public key", ErrJWKS, k.Kid)
			}
			out[k.Kid] = ed25519.PublicKey(x)
		case "RSA":
			if k.Alg != "" && k.Alg != "RS256" {
				continue
			}
			n, err1 := base64.RawURLEncoding.DecodeString(k.N)
			e, err2 := base64.RawURLEncoding.DecodeString(k.E)
			if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 {
				return nil, fmt.Errorf("%w: key %q: n or e is not base64url", ErrJWKS, k.Kid)
			}
			pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
			if pub.N.BitLen() < 2048 || pub.E < 3 {
				return nil, fmt.Errorf("%w: key %q: RSA keys must have at least 2048 bits", ErrJWKS, k.Kid)
			}
			out[k.Kid] = pub
		}
	}
	return out, nil
}

func loadJWKSFile(path string) (keyMap, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("jwks file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("jwks file: %w", err)
	}
	if len(b) > maxJWKSBytes {
		return nil, fmt.Errorf("jwks file %s: %w: larger than %d bytes", path, ErrJWKS, maxJWKSBytes)
	}
	m, err := parseJWKS(b)
	if err != nil {
		return nil, fmt.Errorf("jwks file %s: %w", path, err)
	}
	return m, nil
}

func fetchJWKS(ctx context.Context, client *http.Client, url string) (keyMap, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", url, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks %s: %w: HTTP %d", url, ErrJWKS, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", url, err)
	}
	if len(b) > maxJWKSBytes {
		return nil, fmt.Errorf("jwks %s: %w: larger than %d bytes", url, ErrJWKS, maxJWKSBytes)
	}
	m, err := parseJWKS(b)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", url, err)
	}
	return m, nil
}

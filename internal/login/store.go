package login

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// credentialsFile is the file in the config directory holding the tokens of logins, by control
// plane URL.
const credentialsFile = "credentials.json"

// maxStored bounds the control planes remembered (the oldest expiries go first) and maxFileBytes
// the file read.
const (
	maxStored    = 32
	maxFileBytes = 1 << 20
)

// Credential is a stored login: a user token for one control plane.
type Credential struct {
	APIURL    string    `json:"api_url"`
	Token     string    `json:"token"`
	UserID    string    `json:"user_id"`
	ExpiresAt time.Time `json:"expires_at"`
}

type credentials struct {
	Logins map[string]Credential `json:"logins"`
}

// DefaultDir is os.UserConfigDir()/tunnelplane.
func DefaultDir() (string, error) {
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("config directory: %w", err)
	}
	return filepath.Join(d, "tunnelplane"), nil
}

// key is how a control plane's URL is remembered: without a trailing slash.
func key(apiURL string) string { return strings.TrimSuffix(apiURL, "/") }

// Save stores c in dir (made 0700; the file 0600, written whole and renamed into place) beside
// the logins of other control planes. An existing directory's mode is tightened.
func Save(dir string, c Credential) (string, error) {
	if dir == "" {
		return "", errors.New("no config directory (set --config-dir or TUNNELPLANE_CONFIG_DIR)")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("config directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", fmt.Errorf("config directory: %w", err)
	}
	all, err := read(dir)
	if err != nil {
		return "", err
	}
	now := time.Now()
	for k, v := range all.Logins {
		if !now.Before(v.ExpiresAt) {
			delete(all.Logins, k)
		}
	}
	c.APIURL = key(c.APIURL)
	all.Logins[c.APIURL] = c
	for len(all.Logins) > maxStored {
		oldest := ""
		for k, v := range all.Logins {
			if oldest == "" || v.ExpiresAt.Before(all.Logins[oldest].ExpiresAt) {
				oldest = k
			}
		}
		delete(all.Logins, oldest)
	}
	b, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, credentialsFile)
	tmp, err := os.CreateTemp(dir, ".credentials-*")
	if err != nil {
		return "", fmt.Errorf("credentials: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename: nothing left to remove
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", fmt.Errorf("credentials: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return "", fmt.Errorf("credentials: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("credentials: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("credentials: %w", err)
	}
	return path, nil
}

// Load returns the stored login for apiURL, if one is there and has not expired. A token is only
// ever sent to the control plane that issued it.
func Load(dir, apiURL string) (Credential, bool, error) {
	if dir == "" {
		return Credential{}, false, nil
	}
	all, err := read(dir)
	if err != nil {
		return Credential{}, false, err
	}
	c, ok := all.Logins[key(apiURL)]
	if !ok || c.Token == "" || !time.Now().Before(c.ExpiresAt) {
		return Credential{}, false, nil
	}
	return c, true, nil
}

func read(dir string) (credentials, error) {
	all := credentials{Logins: map[string]Credential{}}
	f, err := os.Open(filepath.Join(dir, credentialsFile))
	if errors.Is(err, os.ErrNotExist) {
		return all, nil
	}
	if err != nil {
		return all, fmt.Errorf("credentials: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Mode().Perm()&0o077 != 0 {
		return all, fmt.Errorf("credentials %s: readable by others (mode %v); remove it and log in again", f.Name(), st.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return all, fmt.Errorf("credentials: %w", err)
	}
	if len(b) > maxFileBytes {
		return all, fmt.Errorf("credentials %s: larger than %d bytes", f.Name(), maxFileBytes)
	}
	if err := json.Unmarshal(b, &all); err != nil {
		return credentials{Logins: map[string]Credential{}}, fmt.Errorf("credentials %s: %w (remove it and log in again)", f.Name(), err)
	}
	if all.Logins == nil {
		all.Logins = map[string]Credential{}
	}
	return all, nil
}

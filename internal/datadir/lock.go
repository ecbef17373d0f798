// Package datadir guards a data directory against a second process: two `serve`s on one data dir
// would share the embedded NATS store, and two nodes one identity and spool.
package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gofrs/flock"
)

// ErrInUse: another process holds the lock.
var ErrInUse = errors.New("data dir in use")

// Lock is a held lock on a data directory; the operating system releases it when the process
// ends, however it ends.
type Lock struct {
	fl   *flock.Flock
	path string
}

// Acquire takes <dir>/<name>.lock for what (e.g. "tunnelplane serve") without waiting, creating
// dir. When another process holds it the error wraps ErrInUse and names that process's pid.
func Acquire(dir, name, what string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, name+".lock")
	fl := flock.New(path)
	ok, err := fl.TryLock()
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if !ok {
		holder := "another process"
		if b, err := os.ReadFile(path); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				holder = fmt.Sprintf("pid %d", pid)
			}
		}
		return nil, fmt.Errorf("%w: another %s is using %s (%s); stop it first, or give this one another --data-dir", ErrInUse, what, dir, holder)
	}
	// The pid is only a hint for the message above; the lock is the flock.
	if err := os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		_ = fl.Unlock()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &Lock{fl: fl, path: path}, nil
}

// Release gives the lock up. Safe to call twice.
func (l *Lock) Release() {
	if l == nil {
		return
	}
	_ = l.fl.Unlock()
}

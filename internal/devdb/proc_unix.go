//go:build unix

package devdb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
)

// lockDir takes an exclusive flock on dir/lock. flock locks belong to the
// open file description, so this excludes other processes and other
// goroutines of this one alike, and the kernel drops the lock if we die.
// The file is opened close-on-exec, so the postmaster we start does not
// inherit (and keep) the lock.
func lockDir(ctx context.Context, dir string) (unlock func(), err error) {
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	release := func() {
		_ = flockRetry(f, syscall.LOCK_UN)
		_ = f.Close()
	}
	done := make(chan error, 1)
	// flock cannot be cancelled; wait for it in a goroutine so the caller's
	// context still bounds how long Resolve blocks behind another process.
	go func() { done <- flockRetry(f, syscall.LOCK_EX) }()
	select {
	case err := <-done:
		if err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		var once sync.Once
		return func() { once.Do(release) }, nil
	case <-ctx.Done():
		go func() {
			if <-done == nil {
				release()
				return
			}
			_ = f.Close()
		}()
		return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
	}
}

// flockRetry retries on EINTR, which the Go runtime's preemption signals
// cause routinely while flock blocks.
func flockRetry(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// serverUser returns the OS user to run server binaries as: nil when we are
// not root, else the postgres user, because initdb and pg_ctl refuse to run
// as root.
func serverUser() (*osUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(superuser)
	if err != nil {
		return nil, fmt.Errorf("running as root, and initdb/pg_ctl refuse to run as root, but there is no %q OS user to run them as (%v): create it (e.g. useradd --system --create-home postgres), run as a non-root user, or set TUNNELPLANE_DATABASE_URL", superuser, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("uid of %s: %w", superuser, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("gid of %s: %w", superuser, err)
	}
	return &osUser{name: u.Username, uid: uid, gid: gid, home: u.HomeDir}, nil
}

// apply makes cmd run as u (the equivalent of runuser -u postgres --),
// without depending on runuser or su being installed.
func (u *osUser) apply(cmd *exec.Cmd) {
	if u == nil {
		return
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
		Uid: uint32(u.uid),
		Gid: uint32(u.gid),
		// Empty, not root's: the child must not keep root's groups.
		Groups: []uint32{},
	}}
	// Root's HOME and USER would be wrong for the postgres user; later
	// entries win in exec.Cmd.Env.
	cmd.Env = append(os.Environ(), "HOME="+u.home, "USER="+u.name, "LOGNAME="+u.name)
}

// checkTraversable verifies that u can walk from / down to dir. initdb and
// the server fail with a bare "Permission denied" otherwise, which does not
// tell the developer which directory to fix.
func checkTraversable(dir string, u *osUser) error {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("stat %s: %w", p, err)
		}
		mode := fi.Mode().Perm()
		ok := mode&0o001 != 0
		if st, isStat := fi.Sys().(*syscall.Stat_t); isStat && !ok {
			// Supplementary groups are dropped when we switch user, so
			// only the owner and primary group count.
			ok = (int(st.Uid) == u.uid && mode&0o100 != 0) || (int(st.Gid) == u.gid && mode&0o010 != 0)
		}
		if !ok {
			return fmt.Errorf("%w: running as root, so the private cluster runs as the %q OS user, but parent directory %s (mode %v) is not traversable by others; run `chmod o+x %s`, choose a Dir elsewhere, or set TUNNELPLANE_DATABASE_URL",
				ErrDirNotTraversable, u.name, p, mode, p)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

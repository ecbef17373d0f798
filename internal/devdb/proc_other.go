//go:build !unix

package devdb

import (
	"context"
	"fmt"
	"os/exec"
	"runtime"
)

// Private clusters rely on flock and switching to the postgres user; on
// other systems callers must point at a server (URL or ProbeAddr).
func lockDir(context.Context, string) (func(), error) {
	return nil, fmt.Errorf("private PostgreSQL clusters are not supported on %s: set TUNNELPLANE_DATABASE_URL", runtime.GOOS)
}

func serverUser() (*osUser, error) { return nil, nil }

func (u *osUser) apply(*exec.Cmd) {}

func checkTraversable(string, *osUser) error { return nil }

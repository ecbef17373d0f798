//go:build unix

package failover

import (
	"os/exec"
	"syscall"
)

// ownGroup starts the command in a process group of its own, so that stopping it
// reaches whatever it started.
func ownGroup(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }

// terminate asks the process group to end (SIGTERM); kill ends it (SIGKILL).
func terminate(cmd *exec.Cmd) error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
func kill(cmd *exec.Cmd) error      { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }

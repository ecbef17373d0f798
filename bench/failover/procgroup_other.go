//go:build !unix

package failover

import "os/exec"

// Without process groups and SIGTERM, stopping a process kills it; the bench's
// processes start nothing of their own.
func ownGroup(*exec.Cmd)            {}
func terminate(cmd *exec.Cmd) error { return cmd.Process.Kill() }
func kill(cmd *exec.Cmd) error      { return cmd.Process.Kill() }

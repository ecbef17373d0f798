//go:build unix

package rsyslog

import (
	"os"
	"syscall"
)

func freeze(p *os.Process) { _ = p.Signal(syscall.SIGSTOP) }
func resume(p *os.Process) { _ = p.Signal(syscall.SIGCONT) }

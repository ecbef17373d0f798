//go:build !unix

package rsyslog

import "os"

// rsyslogd runs on unix only (New fails elsewhere); these keep the bench building.
func freeze(*os.Process) {}
func resume(*os.Process) {}

//go:build !unix

package node

// ProcessCPU is the process's CPU time in seconds; on this platform it cannot be read (false):
// GovernProcs then leaves GOMAXPROCS alone and bench tunnel reports no CPU per request.
func ProcessCPU() (float64, bool) { return 0, false }

//go:build !unix

package node

// processCPU cannot be read here; GovernProcs then leaves GOMAXPROCS alone.
func processCPU() (float64, bool) { return 0, false }

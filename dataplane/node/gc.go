package node

import (
	"os"
	"runtime/debug"
)

// RecommendedGCPercent is the GOGC a node process should run with. x/crypto/ssh allocates a
// fresh buffer (up to 32 KiB) for every SSH packet it receives, so a node carrying traffic
// allocates about as fast as it moves bytes while its live heap stays small. At the default
// GOGC of 100 it then collects every few megabytes; in `tunnelplane bench tunnel` that cost the
// node about a fifth of its CPU (collection, page faults on fresh memory, returning pages),
// both for bulk transfers and for many small requests. At 400 the heap may grow to five times
// the live data between collections.
const RecommendedGCPercent = 400

// TuneGC applies RecommendedGCPercent unless the operator set GOGC or GOMEMLIMIT, and reports
// whether it did. It changes a process-wide setting, so the process that runs a node calls it
// (tunnelplane node and serve), never a library.
func TuneGC() bool {
	if _, ok := os.LookupEnv("GOGC"); ok {
		return false
	}
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		return false
	}
	debug.SetGCPercent(RecommendedGCPercent)
	return true
}

//go:build !unix

package tunnelbench

// cpuSeconds is 0 where getrusage does not exist: the bench then reports no CPU per request
// (its targets do not depend on it).
func cpuSeconds() float64 { return 0 }

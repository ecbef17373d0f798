package api

import (
	"fmt"
	"os"
	"runtime/pprof"
	"sync"
)

// StartCPUProfile profiles until the returned stop (a no-op without a file); bench siem uses it
// too. With several rounds the file holds the last round's profile. Stop may be called twice.
func StartCPUProfile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return sync.OnceFunc(func() {
		pprof.StopCPUProfile()
		f.Close()
	}), nil
}

//go:build race

package tunnel

// raceEnabled: this test binary runs with the race detector.
const raceEnabled = true

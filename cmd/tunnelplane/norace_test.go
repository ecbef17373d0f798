//go:build !race

package main

// raceEnabled: this test binary runs with the race detector.
const raceEnabled = false

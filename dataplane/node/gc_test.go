package node

import (
	"os"
	"runtime/debug"
	"testing"
)

func TestTuneGCLeavesOperatorSettingsAlone(t *testing.T) {
	t.Setenv("GOGC", "50")
	if TuneGC() {
		t.Fatal("TuneGC overrode GOGC")
	}
	os.Unsetenv("GOGC")
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	if !TuneGC() {
		t.Fatal("TuneGC did nothing without GOGC")
	}
	if prev := debug.SetGCPercent(100); prev != RecommendedGCPercent {
		t.Fatalf("GOGC is %d", prev)
	}
}

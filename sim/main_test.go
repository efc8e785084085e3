package sim

import (
	"os"
	"runtime/debug"
	"testing"
)

// TestMain runs the simulator's tests with the collector tuned as
// paxossim tunes it: runs allocate a lot and keep little.
func TestMain(m *testing.M) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(800)
		debug.SetMemoryLimit(4 << 30)
	}
	os.Exit(m.Run())
}

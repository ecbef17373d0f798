package datadir

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// A second holder is refused at once with the first one's pid; after Release it gets the lock.
func TestSecondHolderIsRefusedWithThePid(t *testing.T) {
	dir := t.TempDir()
	if os.Getenv("DATADIR_LOCK_CHILD") != "" {
		l, err := Acquire(os.Getenv("DATADIR_LOCK_CHILD"), "serve", "tunnelplane serve")
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(3)
		}
		fmt.Println("LOCKED")
		time.Sleep(time.Minute)
		l.Release()
		return
	}
	// Another process holds it: flock locks belong to the process, so the holder must be one.
	child := exec.Command(os.Args[0], "-test.run", "^TestSecondHolderIsRefusedWithThePid$")
	child.Env = append(os.Environ(), "DATADIR_LOCK_CHILD="+dir)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	buf := make([]byte, 64)
	n, _ := out.Read(buf)
	if !strings.Contains(string(buf[:n]), "LOCKED") {
		t.Fatalf("child: %q", buf[:n])
	}
	start := time.Now()
	_, err = Acquire(dir, "serve", "tunnelplane serve")
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", child.Process.Pid)) ||
		!strings.Contains(err.Error(), "another tunnelplane serve is using "+dir) {
		t.Fatalf("second holder: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("refusal took %v", d)
	}
	_ = child.Process.Kill()
	_ = child.Wait()
	l, err := Acquire(dir, "serve", "tunnelplane serve")
	if err != nil {
		t.Fatalf("after the holder died: %v", err)
	}
	l.Release()
	l.Release()
}

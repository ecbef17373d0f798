package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// `make run` on a clean checkout prints curl commands, and they work as printed; Ctrl-C stops it.
func TestMakeRunPrintsCurlCommandsThatWork(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the whole system")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	t.Parallel()
	root := pgtest.RepoRoot()
	dbURL := pgtest.NewEmptyDatabase(t)
	dataDir := t.TempDir()
	cmd := exec.Command("make", "-C", root, "--no-print-directory", "run", "DATA_DIR="+dataDir)
	apiAddr := freeAddr(t)
	cmd.Env = append(os.Environ(), "TUNNELPLANE_DATABASE_URL="+dbURL, "TUNNELPLANE_API_ADDR="+apiAddr,
		"TUNNELPLANE_NODE_ADDR="+freeAddr(t), "TUNNELPLANE_NATS_ADDR=127.0.0.1:0", "TUNNELPLANE_LOG_LEVEL=warn")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	})
	var curls []string
	ready := make(chan struct{})
	var out strings.Builder
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		closed := false
		for sc.Scan() {
			line := sc.Text()
			out.WriteString(line + "\n")
			if strings.HasPrefix(strings.TrimSpace(line), "curl ") {
				curls = append(curls, strings.TrimSpace(line))
			}
			if strings.HasPrefix(line, "Stop with Ctrl-C") && !closed {
				closed = true
				close(ready)
			}
		}
		exited <- cmd.Wait()
	}()
	select {
	case <-ready:
	case err := <-exited:
		t.Fatalf("make run exited early: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), stderr.String())
	case <-time.After(4 * time.Minute):
		t.Fatalf("make run printed no curl commands in 4 minutes\nstdout:\n%s\nstderr:\n%s", out.String(), stderr.String())
	}
	if len(curls) != 2 {
		t.Fatalf("want 2 curl commands, got %d:\n%s", len(curls), out.String())
	}
	// The streaming generate call: NDJSON lines, the last one done.
	res, err := exec.Command("sh", "-c", curls[0]).Output()
	if err != nil {
		t.Fatalf("%s: %v", curls[0], err)
	}
	lines := strings.Split(strings.TrimSpace(string(res)), "\n")
	var last struct {
		Response string `json:"response"`
		Done     bool   `json:"done"`
	}
	if len(lines) < 10 || json.Unmarshal([]byte(lines[len(lines)-1]), &last) != nil || !last.Done {
		t.Fatalf("generate through the tunnel returned:\n%s", res)
	}
	res, err = exec.Command("sh", "-c", curls[1]).Output()
	if err != nil {
		t.Fatalf("%s: %v", curls[1], err)
	}
	var list struct {
		Items []struct {
			Name  string `json:"name"`
			State string `json:"state"`
		} `json:"items"`
	}
	if err := json.Unmarshal(res, &list); err != nil || len(list.Items) != 1 || list.Items[0].Name != "llm" || list.Items[0].State != "active" {
		t.Fatalf("tunnels: %v\n%s", err, res)
	}
	// The admin CLI shows the demo agent's session, as the node reported it.
	_, bearer, _ := strings.Cut(curls[1], "Bearer ")
	bearer, _, _ = strings.Cut(bearer, `"`)
	if !slices.Contains(strings.Split(out.String(), "\n"), bearer) {
		t.Fatalf("the user token is not on a line of its own:\n%s", out.String())
	}
	// A second serve on the data dir says at once that this one uses it.
	start := time.Now()
	second, err := exec.Command(filepath.Join(root, "bin", "tunnelplane"), "serve", "--data-dir", dataDir, "--database-url", dbURL,
		"--api-addr", freeAddr(t), "--node-addr", freeAddr(t), "--nats-addr", "127.0.0.1:0").CombinedOutput()
	if err == nil || !strings.Contains(string(second), "another tunnelplane serve is using "+dataDir+" (pid ") || time.Since(start) > 5*time.Second {
		t.Fatalf("a second serve on the data dir (after %v): %v\n%s", time.Since(start), err, second)
	}
	var sessions string
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(sessions, "connected") && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		b, err := exec.Command(filepath.Join(root, "bin", "tunnelplane"), "admin", "tunnels", "sessions", "llm", "--org", "demo",
			"--api-url", "http://"+apiAddr, "--token", bearer).CombinedOutput()
		if err != nil {
			t.Fatalf("admin tunnels sessions: %v\n%s", err, b)
		}
		sessions = string(b)
	}
	if !strings.HasPrefix(sessions, "TUNNEL ") || !strings.Contains(sessions, "llm ") || !strings.Contains(sessions, " connected ") {
		t.Fatalf("admin tunnels sessions:\n%s", sessions)
	}
	// Idle, serve runs on one P (node.GovernProcs), unless the machine has one CPU or the
	// environment sets GOMAXPROCS.
	if _, set := os.LookupEnv("GOMAXPROCS"); !set && runtime.NumCPU() > 1 {
		var procs string
		deadline := time.Now().Add(10 * time.Second)
		for procs != "1" && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
			if resp, err := http.Get("http://" + apiAddr + "/metrics"); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if _, rest, ok := strings.Cut(string(b), "\ngo_sched_gomaxprocs_threads "); ok {
					procs, _, _ = strings.Cut(rest, "\n")
				}
			}
		}
		if procs != "1" {
			t.Errorf("idle serve runs with go_sched_gomaxprocs_threads %q, want 1", procs)
		}
	}
	// Ctrl-C stops everything cleanly.
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		// make itself dies of the interrupt; what matters is that serve stopped without errors
		// and left no process behind.
		var ee *exec.ExitError
		if err != nil && !(errors.As(err, &ee) && ee.ProcessState.Sys().(syscall.WaitStatus).Signal() == syscall.SIGINT) {
			t.Fatalf("make run after Ctrl-C: %v\n%s", err, stderr.String())
		}
		if strings.Contains(stderr.String(), "level=ERROR") {
			t.Fatalf("errors while stopping:\n%s", stderr.String())
		}
		deadline := time.Now().Add(10 * time.Second)
		for syscall.Kill(-cmd.Process.Pid, 0) == nil {
			if time.Now().After(deadline) {
				t.Fatal("processes of make run are still alive 10s after Ctrl-C")
			}
			time.Sleep(50 * time.Millisecond)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("make run did not stop within 30s of Ctrl-C\n%s", stderr.String())
	}
}

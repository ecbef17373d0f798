package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"sync"
	"time"
)

// child is a running bench process.
type child struct {
	role   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  *bufio.Scanner
	stderr *bytes.Buffer
	mu     sync.Mutex
}

func (o *Options) start(ctx context.Context, role string, sp spec) (*child, error) {
	args := append(slices.Clone(o.ExeArgs), role)
	cmd := exec.CommandContext(ctx, o.Exe, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &lockedBuffer{b: &stderr}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s child: %w", role, err)
	}
	c := &child{role: role, cmd: cmd, stdin: stdin, lines: bufio.NewScanner(stdout), stderr: &stderr}
	c.lines.Buffer(make([]byte, 1<<20), 64<<20)
	b, _ := json.Marshal(sp)
	if _, err := stdin.Write(append(b, '\n')); err != nil {
		c.stop()
		return nil, fmt.Errorf("send spec to %s: %w", role, err)
	}
	return c, nil
}

type lockedBuffer struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// next reads the child's next message.
func (c *child) next() (message, error) {
	if !c.lines.Scan() {
		err := c.cmd.Wait()
		return message{}, fmt.Errorf("%s child ended (%v): %s", c.role, err, tail(c.stderr.String()))
	}
	var m message
	if err := json.Unmarshal(c.lines.Bytes(), &m); err != nil {
		return m, fmt.Errorf("%s child said %q: %w", c.role, c.lines.Text(), err)
	}
	if m.Error != "" {
		return m, fmt.Errorf("%s child: %s", c.role, m.Error)
	}
	return m, nil
}

func (c *child) command(cmd string) (message, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := io.WriteString(c.stdin, cmd+"\n"); err != nil {
		return message{}, err
	}
	return c.next()
}

func (c *child) stop() {
	c.stdin.Close()
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}

func tail(s string) string {
	if len(s) > 2000 {
		return "…" + s[len(s)-2000:]
	}
	return s
}

func cpuOf(c *child) float64 {
	m, err := c.command("cpu")
	if err != nil {
		return 0
	}
	return m.CPU
}

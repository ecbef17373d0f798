// Package logbuf is a bytes.Buffer that concurrent writers (a logger's goroutines) and a reader may
// share: tests capture log output with it.
package logbuf

import (
	"bytes"
	"sync"
)

// Buffer collects what is written; the zero value is ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

//go:build unix

package siem

import (
	"errors"
	"net"
	"syscall"
)

// peerClosed reports whether the receiver has already closed conn (its FIN is waiting to be
// read), without reading anything or waiting: a peek that does not block.
func peerClosed(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	var buf [1]byte
	_ = raw.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// 0 bytes and no error: end of stream. An error other than "nothing yet" (a reset):
		// closed as well.
		closed = (n == 0 && err == nil) || (err != nil && !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR))
		return true
	})
	return closed
}

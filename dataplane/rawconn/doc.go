// Package rawconn wraps TCP connections so that their reads and writes are made as raw system
// calls (syscall.RawSyscall inside syscall.RawConn), waiting in the netpoller when the socket is
// not ready, as net.Conn does, but without entering the Go scheduler's syscall state.
//
// Why: once every goroutine of a Go process has been idle for a while, its sysmon thread sleeps
// deeply; the next ordinary system call (entersyscall) wakes it with a futex, and woken that way
// sysmon polls every 20 µs for about a millisecond. On a tunnel, each streamed chunk after a pause
// paid that in the agent and in the node: the wake-up on its path and the polling competing for
// the CPU with the next process the chunk has to reach. Socket reads and writes here are
// non-blocking and take microseconds, so there is nothing for sysmon to retake.
//
// Only Linux is built this way; elsewhere Wrap returns the connection unchanged.
package rawconn

package eventstore

// SetQueuedHook makes s call f each time an append request has entered the appender's queue.
// Call it before s is used from other goroutines.
func SetQueuedHook(s *Store, f func()) { s.queuedHook = f }

package commands

// SetCrashHook makes s stop an idempotent command at a stage ("claimed", "handled") when f says
// so, leaving the database as a process that died there would.
func SetCrashHook(s *Service, f func(stage string) bool) { s.crashHook = f }

// IdempotencyLease is the lease of an idempotency claim.
const IdempotencyLease = idempotencyLease

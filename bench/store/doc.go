// Package store is the harness behind `tunnelplane bench store`: it measures the event store
// against its baseline in one run. The baseline is a raw batched insert of rows of the same
// shape into a table with the same indexes but no signing, hashing or ordering; the system is
// signed appends through eventstore.Store, at several batch sizes and writer counts; then read
// and verify throughput over the log it wrote.
//
// It owns a scratch database for the run (ScratchDatabase, also used by bench api) and drops it
// afterwards. It must not touch any other database, and it uses the event store only through
// its exported API, as the control plane does.
package store

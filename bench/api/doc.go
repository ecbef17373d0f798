// Package api is the harness behind `tunnelplane bench api`: commands per second and the
// latency from a write to the read model, through the admin API over real HTTP, against the
// same commands called in-process (the baseline) in the same run.
//
// It owns the workload (concurrent clients creating and updating tunnels across a few
// organizations), a scratch database for the run (dropped afterwards) and the statistics. Load
// runs the same workload at a fixed rate beside another measurement (bench siem's lag). It
// does not assemble the control plane: the caller's Options.Start does, so that what is measured
// is the control plane as its command runs it.
package api

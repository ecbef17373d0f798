// Package scheduler is the process manager of report schedules: it makes each scheduled run
// when it is due, stores its file in PostgreSQL (report_files, so every control replica serves
// it) and records it with report.generated. It owns no state but that table: at start it reads
// the schedules and the runs the log recorded, then follows the log.
//
// Exactly once: a run's report id is derived from (schedule id, due time), its file is stored
// first (insert if absent, then read back whichever rendering won) together with the
// report.generated payload that describes it, and that stored payload is appended to the
// report's stream with the NoStream expectation. A second process, or this one after a crash
// anywhere in between, finds the stored file and appends the same record, which the log takes
// once. A file is served only once the log holds its record (the reports read model).
//
// The kinds of report are plugged in (Config.Kinds): it must not know how a report is built.
package scheduler

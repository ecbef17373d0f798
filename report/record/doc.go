// Package record owns what every report of tunnelplane does once its document is built: render
// it, hash the file, and append report.generated (who, which report, window, format, the read
// model's position, the file's SHA-256) before the file is handed out; and the Result both the
// compliance and the analytics reports return.
//
// It must not build documents or read read models: its callers (compliance/report,
// analytics/report) do, and they decide the report's id, window and provenance.
package record

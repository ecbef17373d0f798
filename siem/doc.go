// Package siem forwards the log to security teams' SIEMs. This part holds the formats a sink
// writes: OCSF 1.8 JSON (ocsf.go, with the event-type → class table in ocsfmap.go), CEF
// (cef.go), the raw canonical record (raw.go), and RFC 5424 syslog messages in RFC 5425
// octet-counting frames (syslog.go). Every message carries the event id (the dedupe key), the
// log position, the sink's own sequence number (gaps are detectable) and the record's hash.
//
// It reads records and domain events; it must not write to the store or import the API.
package siem

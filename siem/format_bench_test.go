package siem_test

import (
	"testing"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/siem"
)

// BenchmarkSyslogOCSF is the formatting cost per record of a syslog sink sending OCSF.
func BenchmarkSyslogOCSF(b *testing.B) {
	rec := record(b, 7, samples()[domain.TypeOrganizationCreated], domain.Metadata{Actor: "alice", ClientIP: "192.0.2.1"})
	format := siem.SyslogFormat(siem.SyslogConfig{Hostname: "cp-1"}, ocsfBody)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := format(siem.Entry{Record: rec, Seq: uint64(i)}); err != nil {
			b.Fatal(err)
		}
	}
}

package siem_test

import (
	"testing"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/siem"
)

// BenchmarkSyslogOCSF is the formatting cost per record of a syslog sink sending OCSF.
func BenchmarkSyslogOCSF(b *testing.B) {
	rec := record(b, 7, samples()[domain.TypeOrganizationCreated], domain.Metadata{Actor: "alice", ClientIP: "192.0.2.1"})
	format := siem.SyslogOCSF(siem.SyslogConfig{Hostname: "cp-1"}, siem.DefaultProduct("test"))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := format(siem.Entry{Record: rec, Seq: uint64(i)}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendSyslogOCSF is the same appended into one buffer, as a forwarder formats (its
// batches' buffers are reused): no allocation of the message, the record decoded in place.
func BenchmarkAppendSyslogOCSF(b *testing.B) {
	rec := record(b, 7, samples()[domain.TypeOrganizationCreated], domain.Metadata{Actor: "alice", ClientIP: "192.0.2.1"})
	format := siem.AppendSyslogOCSF(siem.SyslogConfig{Hostname: "cp-1"}, siem.DefaultProduct("test"))
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := format(buf[:0], siem.Entry{Record: rec, Seq: uint64(i)}); err != nil {
			b.Fatal(err)
		}
	}
}

// SyslogOCSF (one decode) writes exactly what SyslogFormat with OCSF writes, for every type.
func TestSyslogOCSFIsSyslogFormatOfOCSF(t *testing.T) {
	t.Parallel()
	c := siem.SyslogConfig{Hostname: "cp-1"}
	fast, slow := siem.SyslogOCSF(c, siem.DefaultProduct("test")), siem.SyslogFormat(c, ocsfBody)
	for typ, ev := range samples() {
		e := siem.Entry{Record: record(t, 9, ev, domain.Metadata{Actor: "alice", ClientIP: "192.0.2.1"}), Seq: 4}
		a, err := fast(e)
		if err != nil {
			t.Fatal(err)
		}
		b, err := slow(e)
		if err != nil {
			t.Fatal(err)
		}
		if string(a) != string(b) {
			t.Errorf("%s:\n%s\n%s", typ, a, b)
		}
	}
}

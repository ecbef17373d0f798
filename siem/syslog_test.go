package siem_test

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/siem"
)

// RFC 5424's ABNF for what Syslog writes: PRI VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID
// one SD-ELEMENT, then BOM and MSG.
var rfc5424 = regexp.MustCompile(`^<(\d{1,3})>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{1,6}Z) ([!-~]{1,255}) ([!-~]{1,48}) ([!-~]{1,128}) ([!-~]{1,32}) \[([^ =\]"]{1,32})((?: [^ =\]"]{1,32}="(?:[^"\\\]]|\\["\\\]])*")*)\] \x{FEFF}(.*)$`)

var sdParam = regexp.MustCompile(` ([^ =\]"]{1,32})="((?:[^"\\\]]|\\["\\\]])*)"`)

func TestSyslogMessagesFollowRFC5424AndFrameByOctetCount(t *testing.T) {
	t.Parallel()
	rec := record(t, 1234, samples()[domain.TypeAuthFailed], domain.Metadata{})
	e := siem.Entry{Record: rec, Seq: 77}
	body, err := siem.OCSF(e, siem.DefaultProduct("1"))
	if err != nil {
		t.Fatal(err)
	}
	sev, err := siem.SeverityID(e)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := siem.Syslog(siem.SyslogConfig{Hostname: "cp-1.example"}, e, sev, body)
	if err != nil {
		t.Fatal(err)
	}
	m := rfc5424.FindSubmatch(msg)
	if m == nil {
		t.Fatalf("not RFC 5424:\n%s", msg)
	}
	// log audit (13) × 8 + warning (4): a failed login is medium.
	if string(m[1]) != strconv.Itoa(13*8+4) || string(m[3]) != "cp-1.example" || string(m[4]) != "tunnelplane" ||
		string(m[6]) != domain.TypeAuthFailed || string(m[7]) != "tunnelplane@32473" || !bytes.Equal(m[9], body) {
		t.Fatalf("fields %q", m[1:8])
	}
	params := map[string]string{}
	for _, p := range sdParam.FindAllSubmatch(m[8], -1) {
		params[string(p[1])] = string(p[2])
	}
	if params["eventId"] != rec.EventID.String() || params["position"] != "1234" || params["seq"] != "77" || params["hash"] != fmt.Sprintf("%x", rec.Hash) {
		t.Fatalf("structured data %q", params)
	}

	// Octet counting: the length prefix is the message's length in bytes, so messages holding
	// newlines (JSON, multi-line reasons) stay one message.
	framed := siem.Frame(append(msg, "\nand a newline"...))
	n, rest, ok := strings.Cut(string(framed), " ")
	if !ok || n != strconv.Itoa(len(msg)+len("\nand a newline")) || rest != string(msg)+"\nand a newline" {
		t.Fatalf("frame %q…", framed[:40])
	}
}

func TestSyslogConfigNamesEveryProblem(t *testing.T) {
	t.Parallel()
	err := siem.SyslogConfig{Hostname: "has space", Facility: 24, EnterpriseID: -1}.Validate()
	if err == nil || !strings.Contains(err.Error(), "hostname") || !strings.Contains(err.Error(), "facility") || !strings.Contains(err.Error(), "enterprise") {
		t.Fatalf("%v", err)
	}
}

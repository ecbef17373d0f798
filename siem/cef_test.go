package siem_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/siem"
)

// parseCEF splits a CEF line the way a receiver does, independently of the writer: seven
// header fields separated by unescaped pipes, then space-separated key=value pairs whose values
// run to the next " key=".
func parseCEF(t *testing.T, line string) (header []string, ext map[string]string) {
	t.Helper()
	if strings.ContainsAny(line, "\r\n") {
		t.Fatalf("a CEF line spans lines: %q", line)
	}
	var cur strings.Builder
	rest := ""
	for i := 0; i < len(line); i++ {
		c := line[i]
		if len(header) == 7 {
			rest = line[i:]
			break
		}
		switch {
		case c == '\\' && i+1 < len(line) && (line[i+1] == '\\' || line[i+1] == '|'):
			cur.WriteByte(line[i+1])
			i++
		case c == '\\':
			t.Fatalf("unescaped backslash in the header of %q", line)
		case c == '|':
			header = append(header, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	if len(header) != 7 {
		t.Fatalf("%d header fields in %q", len(header), line)
	}
	ext = map[string]string{}
	// Keys are alphanumeric and start after a space (or at the start); an escaped '=' is not one.
	var key string
	cur.Reset()
	flush := func() {
		if key != "" {
			ext[key] = cur.String()
		}
		cur.Reset()
	}
	for i := 0; i < len(rest); {
		if i == 0 || rest[i-1] == ' ' {
			j := i
			for j < len(rest) && (rest[j] >= 'a' && rest[j] <= 'z' || rest[j] >= 'A' && rest[j] <= 'Z' || rest[j] >= '0' && rest[j] <= '9') {
				j++
			}
			if j > i && j < len(rest) && rest[j] == '=' {
				if key != "" {
					s := cur.String()
					cur.Reset()
					cur.WriteString(strings.TrimSuffix(s, " "))
				}
				flush()
				key = rest[i:j]
				i = j + 1
				continue
			}
		}
		c := rest[i]
		if c == '\\' && i+1 < len(rest) {
			switch rest[i+1] {
			case '\\', '=':
				cur.WriteByte(rest[i+1])
			case 'n':
				cur.WriteByte('\n')
			case 'r':
				cur.WriteByte('\r')
			default:
				t.Fatalf("unknown escape \\%c in %q", rest[i+1], rest)
			}
			i += 2
			continue
		}
		if c == '=' {
			t.Fatalf("unescaped '=' in a value of %q", rest)
		}
		cur.WriteByte(c)
		i++
	}
	flush()
	return header, ext
}

// A receiver reads back exactly what was meant, whatever the names, reasons and actors hold.
func FuzzCEFRoundTrips(f *testing.F) {
	for _, s := range []string{"plain", `pipe|in|name`, `back\slash`, "new\nline", "equals=sign a=b", "cr\r", `\|=\n`, " key=value", "ünïcödé", ""} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, name, actor string) {
		if !utf8.ValidString(name) || !utf8.ValidString(actor) {
			t.Skip()
		}
		ev := domain.TunnelDeleted{TunnelID: "tun-1", OrgID: "org-1", Name: name}
		rec := record(t, 9, ev, domain.Metadata{Actor: actor, ClientIP: "192.0.2.1"})
		line, err := siem.CEF(siem.Entry{Record: rec, Seq: 3}, siem.Product{Name: "tunnel|plane", Vendor: `ve\ndor`, Version: "1\n2"})
		if err != nil {
			t.Fatal(err)
		}
		header, ext := parseCEF(t, line)
		if header[0] != "CEF:0" || header[1] != `ve\ndor` || header[2] != "tunnel|plane" || header[3] != "1 2" || header[4] != domain.TypeTunnelDeleted {
			t.Fatalf("header %q", header)
		}
		if actor != "" && ext["suser"] != actor {
			t.Fatalf("suser %q, want %q (%s)", ext["suser"], actor, line)
		}
		if !strings.Contains(ext["msg"], name) {
			t.Fatalf("msg %q does not hold the name %q (%s)", ext["msg"], name, line)
		}
		if ext["externalId"] != rec.EventID.String() || ext["cn1"] != "9" || ext["cn2"] != "3" || ext["src"] != "192.0.2.1" || ext["cs2"] != "org-1" {
			t.Fatalf("extension %q", ext)
		}
	})
}

// Severity follows the event: a refused login is medium, a tunnel change informational.
func TestCEFSeverityFollowsTheEvent(t *testing.T) {
	t.Parallel()
	all := samples()
	for typ, want := range map[string]string{domain.TypeAuthFailed: "5", domain.TypeTunnelCreated: "1", domain.TypeAuditOverflowed: "8"} {
		line, err := siem.CEF(siem.Entry{Record: record(t, 1, all[typ], domain.Metadata{}), Seq: 1}, siem.DefaultProduct("1"))
		if err != nil {
			t.Fatal(err)
		}
		if header, _ := parseCEF(t, line); header[6] != want {
			t.Errorf("%s: severity %q, want %s (%s)", typ, header[6], want, line)
		}
	}
}

// A login for one host names it as dhost, as OCSF names it dst_endpoint.hostname.
func TestCEFNamesALoginsHost(t *testing.T) {
	t.Parallel()
	login := samples()[domain.TypeUserLoggedIn].(domain.UserLoggedIn)
	for _, host := range []string{"chat.tunnels.example", ""} {
		login.Host = host
		line, err := siem.CEF(siem.Entry{Record: record(t, 1, login, domain.Metadata{}), Seq: 1}, siem.DefaultProduct("1"))
		if err != nil {
			t.Fatal(err)
		}
		if _, ext := parseCEF(t, line); ext["dhost"] != host {
			t.Errorf("dhost %q, want %q (%s)", ext["dhost"], host, line)
		}
	}
}

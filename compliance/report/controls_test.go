package report

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMappingHoldsWhatTheIssueAsks: the embedded mapping is valid and covers every control the
// reports must have.
func TestMappingHoldsWhatTheIssueAsks(t *testing.T) {
	t.Parallel()
	m, err := LoadMapping()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"soc2":     {"CC6.1", "CC6.2", "CC6.3", "CC6.6", "CC6.7", "CC7.2", "CC8.1"},
		"hipaa":    {"164.308(a)(1)(ii)(D)", "164.308(a)(3)(ii)(C)", "164.308(a)(4)", "164.308(a)(5)(ii)(C)", "164.312(a)(1)", "164.312(b)", "164.312(c)(1)", "164.312(d)", "164.312(e)(1)"},
		"iso27001": {"A.5.15", "A.5.18", "A.8.15", "A.8.16", "A.8.24"},
	}
	for fw, ids := range want {
		f, err := m.Framework(fw)
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, c := range f.Controls {
			have[c.ID] = true
		}
		for _, id := range ids {
			if !have[id] {
				t.Errorf("%s lacks control %s", fw, id)
			}
		}
	}
}

func TestMappingRefusesMistakes(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct{ from, to, want string }{
		"unknown type":     {`"role.unassigned", "role.assigned", "audit.access_denied"]`, `"role.unassigned", "role.renamed", "audit.access_denied"]`, `"role.renamed" is not an event type`},
		"unindexed type":   {`["audit.auth_failed"],`, `["usage.recorded"],`, `"usage.recorded" is not an event type`},
		"unknown rule":     {`"exceptions": ["unapproved_cipher", "deprecated_protocol"],`, `"exceptions": ["unapproved_cipher", "weak_password"],`, `unknown rule "weak_password"`},
		"unknown evidence": {`{"kind": "sessions",`, `{"kind": "pie",`, `unknown evidence kind "pie"`},
		"no threshold":     {`"threshold": 5`, `"threshold": 0`, "auth_failures"},
	} {
		broken := strings.Replace(string(controlsJSON), c.from, c.to, 1)
		if broken == string(controlsJSON) {
			t.Fatalf("%s: the replacement does not apply", name)
		}
		if _, err := parseMapping([]byte(broken)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

// TestDocumentedMappingMatches: docs/compliance.md, the review copy of controls.json, names the
// same event types and rules for every control, and describes every rule.
func TestDocumentedMappingMatches(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "compliance.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	m, err := LoadMapping()
	if err != nil {
		t.Fatal(err)
	}
	quoted := func(ss []string) string {
		q := make([]string, len(ss))
		for i, s := range ss {
			q[i] = "`" + s + "`"
		}
		return strings.Join(q, ", ")
	}
	for name := range m.Rules {
		if !strings.Contains(doc, "| `"+name+"` |") {
			t.Errorf("docs/compliance.md does not describe rule %s", name)
		}
	}
	for _, fw := range m.Frameworks {
		for _, c := range fw.Controls {
			_, sec, ok := strings.Cut(doc, "\n### "+c.ID+" "+c.Title+"\n")
			if !ok {
				t.Errorf("docs/compliance.md has no section %s %s", c.ID, c.Title)
				continue
			}
			sec, _, _ = strings.Cut(sec, "\n#")
			want := []string{"- **Events counted:** " + quoted(c.Events) + "\n"}
			if len(c.Exceptions) > 0 {
				want = append(want, "- **Exceptions:** "+quoted(c.Exceptions)+"\n")
			}
			for _, w := range want {
				if !strings.Contains(sec, w) {
					t.Errorf("docs/compliance.md %s lacks %q", c.ID, w)
				}
			}
		}
	}
}

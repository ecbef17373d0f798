package commands_test

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/tunnelplane/tunnelplane/commands"
)

func TestBounded(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 300) // 600 bytes, two per character
	cases := []struct {
		name, in string
		max      int
		want     string // "" checks the properties only
	}{
		{"short and clean is kept", "curl/8.5.0", 512, "curl/8.5.0"},
		{"empty", "", 16, ""},
		{"NUL and controls become U+FFFD", "a\x00b\x1fc\x7f", 64, "a\uFFFDb\uFFFDc\uFFFD"},
		{"invalid UTF-8 becomes U+FFFD", "a\xffb", 64, "a\uFFFDb"},
		{"long is cut with a hash", strings.Repeat("U", 17_000), 512, ""},
		{"cut at a character boundary", long, 101, ""},
		{"tiny bound cuts without a hash", strings.Repeat("x", 100), 10, "xxxxxxxxxx"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := commands.Bounded(c.in, c.max)
			if c.want != "" && got != c.want {
				t.Fatalf("Bounded(%q, %d) = %q, want %q", c.in, c.max, got, c.want)
			}
			checkBounded(t, c.in, c.max, got)
		})
	}
	a, b := commands.Bounded(strings.Repeat("U", 1000)+"a", 64), commands.Bounded(strings.Repeat("U", 1000)+"b", 64)
	if a == b || !strings.Contains(a, "sha256:") {
		t.Fatalf("values that differ past the cut must stay apart: %q, %q", a, b)
	}
}

func checkBounded(t *testing.T, in string, max int, got string) {
	t.Helper()
	if len(got) > max || !utf8.ValidString(got) || strings.IndexFunc(got, unicode.IsControl) >= 0 {
		t.Fatalf("Bounded(%q, %d) = %q: %d bytes, valid %v", in, max, got, len(got), utf8.ValidString(got))
	}
	if again := commands.Bounded(got, max); again != got {
		t.Fatalf("Bounded is not stable: %q then %q", got, again)
	}
}

// FuzzBounded: whatever bytes a caller sends, what the audit log keeps is valid UTF-8 without
// control characters, within the bound, and stays as it is when bounded again.
func FuzzBounded(f *testing.F) {
	f.Add("Mozilla/5.0 (X11; Linux x86_64)", 512)
	f.Add("mallory\x00", 256)
	f.Add(strings.Repeat("<", 600), 512)
	f.Add("\xe2\x82", 1)
	f.Add(strings.Repeat("\u2028", 100), 64)
	f.Fuzz(func(t *testing.T, in string, max int) {
		if max < 0 || max > 4096 {
			return
		}
		checkBounded(t, in, max, commands.Bounded(in, max))
	})
}

package domain

import (
	"net/url"
	"testing"
)

// A path LocalPath accepts stays on the origin it is resolved against, however a browser might
// read it: no scheme, no host, no backslash that browsers turn into a slash.
func FuzzLocalPath(f *testing.F) {
	for _, s := range []string{"/", "/chat?x=1", "//evil.example/", "/\\evil.example", "https://evil.example/", "/%2F%2Fevil", "/a b",
		"/\t/evil.example", "javascript:alert(1)", "/.tunnelplane/login", ""} {
		f.Add(s)
	}
	base, _ := url.Parse("https://web.acme.nodes.example/")
	f.Fuzz(func(t *testing.T, p string) {
		if !LocalPath(p) {
			return
		}
		u, err := url.Parse(p)
		if err != nil {
			return // a browser would not follow it anywhere either
		}
		if u.Scheme != "" || u.Host != "" || u.User != nil {
			t.Fatalf("%q names a scheme or host", p)
		}
		if r := base.ResolveReference(u); r.Host != base.Host || r.Scheme != base.Scheme {
			t.Fatalf("%q leads to %s", p, r)
		}
	})
}

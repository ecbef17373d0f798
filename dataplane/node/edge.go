package node

import (
	"bufio"
	"bytes"
	"net/http"

	"github.com/valyala/fasthttp"
)

// The ingress's edge: what the node accepts from callers and upstreams, and what it rewrites
// before passing it on. Every byte it forwards was parsed and checked here first: a header an
// upstream's parser might read differently (a name with a space, a control byte) is refused,
// never passed through, because one pooled channel carries many callers' requests in turn.

// tokenChars are the bytes of an RFC 9110 token (tchar).
var tokenChars = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenChars[c] {
			return false
		}
	}
	return true
}

// isFieldValue reports an RFC 9110 field value: visible ASCII, obs-text, spaces and tabs; no
// control bytes (CR, LF and NUL above all).
func isFieldValue(b []byte) bool {
	for _, c := range b {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// isHostValue reports a Host (or absolute-form authority) the node can pass on: uri-host and
// optional port characters only.
func isHostValue(b []byte) bool {
	for _, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		default:
			switch c {
			case '-', '.', '_', '~', ':', '[', ']', '%', '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=':
			default:
				return false
			}
		}
	}
	return true
}

// badRequest is why the ingress refuses a request it parsed: a client-side problem, answered 400
// without echoing any of the request's bytes.
type badRequest string

// checkRequest refuses a request whose method, target, Host or headers the node will not pass
// on. fasthttp has already refused what it cannot parse (bare CR or LF, NUL, two Host headers,
// broken framing); this refuses what it lets through.
func checkRequest(h *fasthttp.RequestHeader) (badRequest, bool) {
	if !isToken(h.Method()) {
		return "the method is not a token", false
	}
	if why, ok := checkTarget(h.RequestURI(), h.Method()); !ok {
		return why, false
	}
	if !isHostValue(h.Host()) {
		return "the Host header is not a host name or address", false
	}
	if why, ok := checkRawHeaders(h.RawHeaders()); !ok {
		return why, false
	}
	bad := badRequest("")
	for k, v := range h.All() {
		if !isToken(k) {
			bad = "a header name is not a token (RFC 9110 §5.1)"
			break
		}
		if !isFieldValue(v) {
			bad = "a header value holds a control character"
			break
		}
	}
	return bad, bad == ""
}

// checkRawHeaders refuses what fasthttp accepts but reads differently from other parsers: a
// folded header line (obs-fold, which fasthttp joins; a parser that does not would see the
// continuation as a header of its own, Content-Length say) and any Transfer-Encoding but one
// "chunked" (fasthttp reads "identity", or a list, as no body and the body as the next request;
// RFC 9112 §6.3 asks for a 400).
func checkRawHeaders(raw []byte) (badRequest, bool) {
	te := 0
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			return "a header line is folded (obs-fold)", false
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		if bytes.EqualFold(name, []byte("Transfer-Encoding")) {
			te++
			if te > 1 || !bytes.EqualFold(bytes.TrimSpace(value), []byte("chunked")) {
				return "Transfer-Encoding must be a single chunked", false
			}
		}
	}
	return "", true
}

// checkTarget refuses a request target with bytes no URI holds (controls, spaces, '#'), a form
// other than origin, absolute http(s) or "OPTIONS *", or a dot segment in its path: the node
// routes on the raw path, and an upstream that resolved /t/x/../../y would see another path
// than the one routed. Bytes above 0x7f pass (targetBytes percent-encodes them).
func checkTarget(t []byte, method []byte) (badRequest, bool) {
	if len(t) == 0 {
		return "the request target is empty", false
	}
	for _, c := range t {
		if c <= ' ' || c == 0x7f || c == '#' {
			return "the request target holds a control character, a space or a fragment", false
		}
	}
	path := t
	switch {
	case t[0] == '/':
	case len(t) == 1 && t[0] == '*' && string(method) == http.MethodOptions:
		return "", true
	default:
		lower := bytes.ToLower(t[:min(len(t), len("https://"))])
		var scheme int
		switch {
		case bytes.HasPrefix(lower, []byte("http://")):
			scheme = len("http://")
		case bytes.HasPrefix(lower, []byte("https://")):
			scheme = len("https://")
		default:
			return "the request target must be a path or an absolute http(s) URI", false
		}
		authority := t[scheme:]
		path = nil
		if i := bytes.IndexAny(authority, "/?"); i >= 0 {
			path, authority = authority[i:], authority[:i]
		}
		if len(authority) == 0 || bytes.IndexByte(authority, '@') >= 0 || !isHostValue(authority) {
			return "the request target's authority is not a host", false
		}
	}
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	for seg := range bytes.SplitSeq(path, []byte("/")) {
		if isDotSegment(seg) {
			return "the request path holds a dot segment (. or ..)", false
		}
	}
	return "", true
}

// isDotSegment reports "." and "..", also percent-encoded (%2e), which some servers decode
// before resolving.
func isDotSegment(seg []byte) bool {
	dots := 0
	for i := 0; i < len(seg); {
		switch {
		case seg[i] == '.':
			i++
		case i+2 < len(seg) && seg[i] == '%' && seg[i+1] == '2' && (seg[i+2] == 'e' || seg[i+2] == 'E'):
			i += 3
		default:
			return false
		}
		dots++
	}
	return dots == 1 || dots == 2
}

// writeTarget writes t with every byte above 0x7f percent-encoded: a URI holds ASCII only, and
// upstreams differ on what raw UTF-8 in a request line means.
func writeTarget(bw *bufio.Writer, t []byte) {
	const hex = "0123456789ABCDEF"
	start := 0
	for i, c := range t {
		if c >= 0x80 {
			bw.Write(t[start:i])
			bw.Write([]byte{'%', hex[c>>4], hex[c&15]})
			start = i + 1
		}
	}
	bw.Write(t[start:])
}

// clientIdentityHeader reports request headers that describe the client or the original request
// to an upstream (the client's address, scheme, host, port or URL). Whatever a caller puts there
// is a claim nobody checked: the node drops them and sets its own X-Forwarded-* and X-Real-IP.
// names are as fasthttp normalises them.
func clientIdentityHeader(k []byte) bool {
	switch string(k) {
	case "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Prefix",
		"X-Forwarded-Port", "X-Forwarded-Server", "X-Forwarded-Ssl", "X-Forwarded-Scheme", "X-Forwarded-Uri",
		"X-Forwarded-Path", "X-Original-Forwarded-For",
		"X-Real-Ip", "True-Client-Ip", "X-Client-Ip", "Client-Ip", "X-Cluster-Client-Ip", "Cf-Connecting-Ip",
		"Fastly-Client-Ip", "X-Proxyuser-Ip",
		"X-Original-Url", "X-Original-Uri", "X-Rewrite-Url", "X-Original-Host", "X-Host", "X-Http-Host",
		"Front-End-Https", "X-Url-Scheme":
		return true
	}
	return false
}

// checkResponseHeader refuses an upstream's response header the node would not pass to callers:
// a name that is not a token or a value with control characters. A caller's connection may carry
// other tunnels' responses next (path routing), so nothing ambiguous may reach it.
func checkResponseHeader(h *fasthttp.ResponseHeader) bool {
	for k, v := range h.All() {
		if !isToken(k) || !isFieldValue(v) {
			return false
		}
	}
	return true
}

// scopeCookie rewrites a Set-Cookie value so the cookie stays with the tunnel that set it: its
// Domain attribute is removed (a host-only cookie for the tunnel's host: one tenant cannot set
// cookies for other tunnels under the base domain) and, under path routing, its Path is moved
// under the tunnel's prefix (/t/<ref>).
func scopeCookie(v []byte, prefix string) []byte {
	out := make([]byte, 0, len(v)+len(prefix))
	hasPath := false
	for i, attr := range bytes.Split(v, []byte(";")) {
		if i == 0 {
			out = append(out, attr...)
			continue
		}
		name, val, _ := bytes.Cut(bytes.TrimSpace(attr), []byte("="))
		switch {
		case bytes.EqualFold(name, []byte("Domain")):
			continue
		case bytes.EqualFold(name, []byte("Path")) && prefix != "":
			hasPath = true
			out = append(out, "; Path="...)
			out = append(out, prefix...)
			if p := bytes.TrimSpace(val); len(p) > 1 && p[0] == '/' {
				out = append(out, p...)
			}
			continue
		}
		out = append(out, ';')
		out = append(out, attr...)
	}
	if prefix != "" && !hasPath {
		out = append(out, "; Path="...)
		out = append(out, prefix...)
	}
	return out
}

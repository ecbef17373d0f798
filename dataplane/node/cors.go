package node

import (
	"bytes"
	"net/http"
	"slices"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/tunnelplane/tunnelplane/domain"
)

// CORS at the ingress (a tunnel's Route.CORS). Browsers ask before a cross-origin call with a
// credential (a preflight: OPTIONS with Origin and Access-Control-Request-Method, never with a
// credential) and let a page read a response only when it grants the page's origin. With a list
// of origins the node answers preflights itself and grants responses (its own refusals too, so
// that a page can read why) to those origins only; in passthrough mode the upstream answers
// preflights, which are then the only requests that reach it without a credential, and the node
// adds nothing to responses.
//
// A preflight is answered for a tunnel addressed by id or as <tunnel>.<org> (a bare name
// resolves only for a caller with a credential, which a preflight never carries); a tunnel with
// a CORS setting thereby tells anonymous callers that it exists, as browsers need.

// Bounds of what a preflight may ask for: more is refused (400), not trimmed.
const (
	corsMaxRequestHeaders = 64
	corsMaxRequestList    = 4096
	corsMaxMethod         = 32
	// corsMaxAge is how long a browser may keep a preflight's answer, in seconds (Chromium keeps
	// at most 7,200; 600 keeps a changed setting from lingering).
	corsMaxAge = "600"
)

// allows tells whether c grants origin (the Origin header as the browser sent it).
func (c *CORS) allows(origin []byte) bool {
	if c == nil || c.Passthrough {
		return false
	}
	return slices.Contains(c.Origins, string(origin))
}

// corsAddressable tells whether ref can name a tunnel without a caller: <tunnel>.<org> or a tunnel
// id. A bare name resolves only within a caller's organizations, so resolving one for nobody
// finds nothing, and a Router may pay a pass over every organization to learn that (the view
// does): it is not looked up for anyone who merely sends an Origin header.
func corsAddressable(ref string) bool {
	return strings.Contains(ref, ".") || domain.ValidID(ref)
}

// isPreflight tells whether a request is a CORS preflight.
func isPreflight(h *fasthttp.RequestHeader) bool {
	return h.IsOptions() && len(h.Peek("Origin")) > 0 && len(h.Peek("Access-Control-Request-Method")) > 0
}

// answerPreflight answers a preflight for a tunnel whose CORS setting lists origins: for a listed
// origin 204 with the grant, echoing the method and headers it asks for (tokens, bounded); for
// another one 403 and no grant. The connection closes after it, as after every answer to a
// caller without a credential.
func (n *Node) answerPreflight(ctx *fasthttp.RequestCtx, c *CORS, origin []byte) {
	h, out := &ctx.Request.Header, &ctx.Response.Header
	ctx.SetConnectionClose()
	out.Set("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
	if !c.allows(origin) {
		n.metrics.refused.WithLabelValues("cors_origin").Inc()
		writeProblem(ctx, problem{Status: http.StatusForbidden, Slug: "cors-origin-refused", Title: "Origin not allowed",
			Detail: "this tunnel does not let pages of this origin call it (its CORS setting lists the origins it does)"})
		return
	}
	method := bytes.TrimSpace(h.Peek("Access-Control-Request-Method"))
	names, ok := corsRequestHeaders(h.Peek("Access-Control-Request-Headers"))
	if len(method) > corsMaxMethod || !isToken(method) || !ok {
		n.metrics.refused.WithLabelValues("cors_preflight").Inc()
		writeProblem(ctx, problem{Status: http.StatusBadRequest, Slug: "bad-preflight", Title: "Malformed preflight",
			Detail: "Access-Control-Request-Method must be a method and Access-Control-Request-Headers a list of at most 64 header names"})
		return
	}
	out.SetBytesV("Access-Control-Allow-Origin", origin)
	out.Set("Access-Control-Allow-Credentials", "true")
	out.SetBytesV("Access-Control-Allow-Methods", method)
	if names != "" {
		out.Set("Access-Control-Allow-Headers", names)
	}
	out.Set("Access-Control-Max-Age", corsMaxAge)
	ctx.SetStatusCode(http.StatusNoContent)
}

// corsRequestHeaders reads Access-Control-Request-Headers: a list of header names, returned in
// lower case joined by ", " ("" for none); ok is false for anything else or more than the bounds.
func corsRequestHeaders(v []byte) (string, bool) {
	if len(v) > corsMaxRequestList {
		return "", false
	}
	var b strings.Builder
	n := 0
	for name := range bytes.SplitSeq(v, []byte(",")) {
		name = bytes.TrimSpace(name)
		if len(name) == 0 {
			continue
		}
		if n++; n > corsMaxRequestHeaders || !isToken(name) {
			return "", false
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strings.ToLower(string(name)))
	}
	return b.String(), true
}

// grantCORS gives the response to a request from origin the tunnel's grant, c being its setting
// (nil: none, nothing is done). With a list of origins the node's grant replaces whatever the
// upstream granted: a listed origin gets Access-Control-Allow-Origin, -Allow-Credentials and
// -Expose-Headers naming the response's headers; another one gets none. Passthrough leaves the
// upstream's headers alone.
func grantCORS(ctx *fasthttp.RequestCtx, c *CORS, origin []byte) {
	if c == nil || c.Passthrough {
		return
	}
	h := &ctx.Response.Header
	h.Del("Access-Control-Allow-Origin")
	h.Del("Access-Control-Allow-Credentials")
	h.Del("Access-Control-Expose-Headers")
	h.Add("Vary", "Origin")
	if !c.allows(origin) {
		return
	}
	h.SetBytesV("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Credentials", "true")
	if exposed := exposedHeaders(h); exposed != "" {
		h.Set("Access-Control-Expose-Headers", exposed)
	}
}

// exposedHeaders names the response's headers a page cannot read without being told
// (Access-Control-Expose-Headers; "*" is no wildcard for a response with credentials): all but
// the CORS-safelisted ones, cookies and the CORS headers themselves.
func exposedHeaders(h *fasthttp.ResponseHeader) string {
	var names []string
	for k := range h.All() {
		switch string(k) {
		case "Cache-Control", "Content-Language", "Content-Length", "Content-Type", "Expires", "Last-Modified", "Pragma",
			"Set-Cookie", "Vary", "Date", "Server":
			continue
		}
		if bytes.HasPrefix(k, []byte("Access-Control-")) || slices.Contains(names, string(k)) {
			continue
		}
		names = append(names, string(k))
	}
	return strings.Join(names, ", ")
}

// Package browsertest drives a real browser (headless Chromium through the DevTools protocol,
// chromedp) against a whole system: a control plane on a fresh PostgreSQL database, a node, NATS,
// an agent, a real OIDC provider (internal/oidctest) and an upstream page that streams. It owns
// nothing but its tests; it is its own package so that the browser runs beside the other
// packages' tests.
//
// Without a Chromium the tests skip, unless CI=true: then they fail.
package browsertest

// Package agent is the tunnel agent (`tunnelplane connect`): it dials a node over WebSocket,
// checks the node's SSH host key against a pinned fingerprint, logs in with its agent token,
// asks for its tunnel and carries every forwarded connection to the upstream: the tunnel's, as
// the node tells it, or its own (Config.Upstream). It reconnects with exponential backoff and
// jitter until its context ends, then drains (the calls in flight finish, up to a timeout); it
// stops at once on a refusal a retry cannot change (ErrPermanent).
//
// It owns the client side of the node–agent protocol (the names come from dataplane/node) and
// the copying between SSH channels and the upstream. It must not decide anything about routing,
// authorization or usage: the node does, and the agent holds no credential but its token.
package agent

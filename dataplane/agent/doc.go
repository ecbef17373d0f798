// Package agent is the tunnel agent (`tunnelplane connect`): it dials a node over WebSocket,
// checks the node's SSH host key against a pinned fingerprint, logs in with its agent token,
// asks for its tunnel and carries every forwarded connection to its local upstream. It
// reconnects with exponential backoff and jitter until its context ends.
//
// It owns the client side of the node–agent protocol (the names come from dataplane/node) and
// the copying between SSH channels and the upstream. It must not decide anything about routing,
// authorization or usage: the node does, and the agent holds no credential but its token.
package agent

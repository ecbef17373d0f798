// Package view is a data-plane node's local picture of the control plane: token keys, tunnels,
// role assignments and revoked agent tokens, rebuilt from the relayed event log (from the start,
// then live). From it the node authenticates agents, routes ingress and authorizes callers
// without a database or a round trip to the control plane; a node restarted from nothing
// converges by replaying the stream.
//
// It only reads events; it must not append or call the control plane.
package view

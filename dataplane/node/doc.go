// Package node is the data-plane node server: the WebSocket endpoint agents dial, the SSH server
// that runs over it, and the HTTP ingress that carries callers' requests through SSH channels to
// the agents' local services.
//
// It owns the wire protocol between node and agent (protocol.go: WebSocket subprotocols, SSH
// algorithms, request and channel names), agent sessions (one per tunnel on this node, the newest
// wins), keepalives, the ingress server (fasthttp, server.go), its reverse proxy and HTTP/1.1
// over SSH channels,
// per-tunnel usage windows and the node's Prometheus metrics. It reports what it saw as domain
// facts through a Sink and learns who may do what through Authenticator, Router and
// IngressAuthorizer.
//
// It must not touch the event store, NATS or the control plane's read models: the process that
// wires a node (cmd/tunnelplane) supplies those behind the interfaces. It decides no
// authorization itself; it only asks and enforces.
package node

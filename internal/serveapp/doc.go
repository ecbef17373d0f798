// Package serveapp assembles `tunnelplane serve`, everything in one process: an embedded NATS
// server, the control plane (internal/controlapp) with its side of the bus, one data-plane node
// (internal/nodeapp) that enrolls itself, and with Demo a demo LLM upstream, tunnel and agent.
// It is for development and trying the system out; production runs `control` and `node` apart.
package serveapp

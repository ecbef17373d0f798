// Package natsdeploy holds no code. It is the NATS configuration of a tunnelplane cluster
// (nats-server.conf, nats-cluster.conf, templates/ and render-accounts.sh, which generates
// accounts.conf; see README.md), and its tests start a real nats-server from that configuration
// to show that each credential can do what its holder does and nothing a node must not.
//
// It must not change the product: the streams are created by the product's own EnsureStreams,
// and the node and control sides are the product's own bus components.
package natsdeploy

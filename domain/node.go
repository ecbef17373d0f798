package domain

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// NodeState is where a data-plane node is in its life.
type NodeState string

const (
	NodeJoined   NodeState = "joined"
	NodeDraining NodeState = "draining"
	NodeLeft     NodeState = "left"
)

// Node is a data-plane node of the cluster.
type Node struct {
	id, name, eventKeyID string
	state                NodeState
	lost                 bool
	version              uint64
}

// NewNode is the input of EnrollNode.
type NewNode struct {
	NodeID, Name, HostKey, HostKeyFingerprint, EventKeyID, AgentURL, IngressURL string
}

// EnrollNode decides a node's enrollment.
func EnrollNode(in NewNode) (NodeEnrolled, error) {
	var p problems
	checkID(&p, "node_id", in.NodeID)
	checkName(&p, "name", in.Name)
	if !strings.HasPrefix(in.HostKey, "ssh-ed25519 ") {
		p.add("host_key", "must be an ssh-ed25519 public key in authorized_keys format")
	}
	if !strings.HasPrefix(in.HostKeyFingerprint, "SHA256:") {
		p.add("host_key_fingerprint", "must be an OpenSSH SHA256 fingerprint")
	}
	if !strings.HasPrefix(in.EventKeyID, "ed25519:") {
		p.add("event_key_id", "must be an ed25519 key id")
	}
	for field, raw := range map[string]string{"agent_url": in.AgentURL, "ingress_url": in.IngressURL} {
		if raw == "" {
			continue
		}
		if u, err := url.Parse(raw); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "ws" && u.Scheme != "wss") {
			p.add(field, "must be an http(s) or ws(s) URL")
		}
	}
	if err := p.err(); err != nil {
		return NodeEnrolled{}, err
	}
	return NodeEnrolled(in), nil
}

// RehydrateNode rebuilds a node from its stream.
func RehydrateNode(events []Recorded) (*Node, error) {
	if len(events) == 0 {
		return nil, ErrNotFound
	}
	n := &Node{}
	for _, r := range events {
		e, err := Decode(r.Type, r.Payload)
		if err != nil {
			return nil, err
		}
		switch ev := e.(type) {
		case *NodeEnrolled:
			n.id, n.name, n.eventKeyID, n.state = ev.NodeID, ev.Name, ev.EventKeyID, NodeJoined
		case *NodeDrainRequested:
			n.state = NodeDraining
		case *NodeDrained:
		case *NodeRemoved:
			n.state = NodeLeft
		case *NodeLost:
			n.lost = true
		case *NodeRecovered:
			n.lost = false
		default:
			return nil, fmt.Errorf("node: %w: %s", ErrUnknownEvent, r.Type)
		}
		n.version = r.StreamVersion
	}
	return n, nil
}

// Drain decides a drain request.
func (n *Node) Drain() (NodeDrainRequested, error) {
	if n.state != NodeJoined {
		return NodeDrainRequested{}, fmt.Errorf("drain node %s: %w: it is %s", n.id, ErrInvalidState, n.state)
	}
	return NodeDrainRequested{NodeID: n.id}, nil
}

// Remove decides taking the node out.
func (n *Node) Remove(reason string) (NodeRemoved, error) {
	if n.state == NodeLeft {
		return NodeRemoved{}, fmt.Errorf("remove node %s: %w: it already left", n.id, ErrInvalidState)
	}
	return NodeRemoved{NodeID: n.id, Reason: reason}, nil
}

// MarkLost decides that a silent node is lost; nil when it is already lost or has left.
func (n *Node) MarkLost(lastSeen time.Time) *NodeLost {
	if n.lost || n.state == NodeLeft {
		return nil
	}
	return &NodeLost{NodeID: n.id, LastSeen: lastSeen}
}

// MarkRecovered decides that a lost node is back; nil when it was not lost.
func (n *Node) MarkRecovered() *NodeRecovered {
	if !n.lost || n.state == NodeLeft {
		return nil
	}
	return &NodeRecovered{NodeID: n.id}
}

func (n *Node) ID() string         { return n.id }
func (n *Node) Name() string       { return n.name }
func (n *Node) EventKeyID() string { return n.eventKeyID }
func (n *Node) State() NodeState   { return n.state }
func (n *Node) Lost() bool         { return n.lost }
func (n *Node) Version() uint64    { return n.version }

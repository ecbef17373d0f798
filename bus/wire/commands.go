package wire

import (
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/components/cqrs"

	"github.com/tunnelplane/tunnelplane/domain"
)

// Command names. A command travels as JSON on "commands.<name>" in TP_COMMANDS with the watermill
// metadata header "name" = the command name and Nats-Msg-Id = the command id (so a command sent
// twice within the duplicate window is stored once). Never rename one.
const (
	CommandDisconnectAgent = "disconnect_agent"
	CommandDrainNode       = "drain_node"
)

// Command is a control → node command.
type Command interface {
	// CommandName is the constant wire name (never derived from the Go type name).
	CommandName() string
	// ID is the command id; a node executes a command id at most once while it remembers it.
	ID() string
	// Validate reports what is missing.
	Validate() error
}

// DisconnectAgent drops the agents of a tunnel, or those using a token, on one node or on all.
//
//	{"command_id":"…","node_id":"…","tunnel_id":"…","token_id":"…","reason":"…"}
type DisconnectAgent struct {
	CommandID string `json:"command_id"`
	// NodeID targets one node; empty targets every node.
	NodeID string `json:"node_id,omitempty"`
	// TunnelID or TokenID (at least one) selects the agents.
	TunnelID string `json:"tunnel_id,omitempty"`
	TokenID  string `json:"token_id,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// DrainNode asks one node to stop taking agents and let its connections go.
//
//	{"command_id":"…","node_id":"…"}
type DrainNode struct {
	CommandID string `json:"command_id"`
	NodeID    string `json:"node_id"`
}

func (DisconnectAgent) CommandName() string { return CommandDisconnectAgent }

func (c DisconnectAgent) ID() string { return c.CommandID }

func (DrainNode) CommandName() string { return CommandDrainNode }

func (c DrainNode) ID() string { return c.CommandID }

// Validate reports every problem with the command.
func (c DisconnectAgent) Validate() error {
	var errs []error
	errs = append(errs, checkCommandID(c.CommandID))
	if c.NodeID != "" && !domain.ValidID(c.NodeID) {
		errs = append(errs, fmt.Errorf("%w: node_id %q is not a UUID", ErrInvalidCommand, c.NodeID))
	}
	if c.TunnelID == "" && c.TokenID == "" {
		errs = append(errs, fmt.Errorf("%w: %s needs a tunnel_id or a token_id", ErrInvalidCommand, CommandDisconnectAgent))
	}
	return errors.Join(errs...)
}

// Validate reports every problem with the command.
func (c DrainNode) Validate() error {
	var errs []error
	errs = append(errs, checkCommandID(c.CommandID))
	if !domain.ValidID(c.NodeID) {
		errs = append(errs, fmt.Errorf("%w: %s needs the node_id of one node, got %q", ErrInvalidCommand, CommandDrainNode, c.NodeID))
	}
	return errors.Join(errs...)
}

func checkCommandID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("%w: command_id must have 1 to 128 bytes, has %d", ErrInvalidCommand, len(id))
	}
	return nil
}

// commandName names commands for watermill's marshaler from CommandName, never from Go types.
func commandName(v any) string {
	if c, ok := v.(Command); ok {
		return c.CommandName()
	}
	return ""
}

var CommandMarshaler = cqrs.JSONMarshaler{GenerateName: commandName}

// Decision is a decision of the log a node carries out: a deleted tunnel or a revoked agent token
// (disconnect their agents), a drain request (drain that node). Its JSON is part of a node's view
// snapshot.
type Decision struct {
	Type     string `json:"type"`
	TunnelID string `json:"tunnel_id,omitempty"`
	TokenID  string `json:"token_id,omitempty"`
	NodeID   string `json:"node_id,omitempty"`
}

// DecisionOf is the decision e records, if it records one.
func DecisionOf(e domain.Event) (Decision, bool) {
	switch ev := e.(type) {
	case *domain.TunnelDeleted:
		return Decision{Type: domain.TypeTunnelDeleted, TunnelID: ev.TunnelID}, true
	case *domain.AgentTokenRevoked:
		return Decision{Type: domain.TypeAgentTokenRevoked, TokenID: ev.TokenID}, true
	case *domain.NodeDrainRequested:
		return Decision{Type: domain.TypeNodeDrainRequested, NodeID: ev.NodeID}, true
	}
	return Decision{}, false
}

// Command is the node command the decision recorded as event id implies, with id as the
// command's id. It is the one rule of both sides: the control plane's reactor sends what it
// returns, and a node runs, for a command naming id, only what it returns for the decision its
// own view holds under id (whatever the message said).
func (d Decision) Command(id string) (Command, bool) {
	switch d.Type {
	case domain.TypeTunnelDeleted:
		return DisconnectAgent{CommandID: id, TunnelID: d.TunnelID, Reason: "tunnel deleted"}, true
	case domain.TypeAgentTokenRevoked:
		return DisconnectAgent{CommandID: id, TokenID: d.TokenID, Reason: "agent token revoked"}, true
	case domain.TypeNodeDrainRequested:
		return DrainNode{CommandID: id, NodeID: d.NodeID}, true
	}
	return nil, false
}

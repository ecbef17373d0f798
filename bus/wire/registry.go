package wire

import (
	"time"
)

// Heartbeat is a node's entry in the tp_nodes bucket, under the key <node-id>, as JSON:
//
//	{"node_id":"…","name":"edge-1","agent_url":"wss://…","ingress_url":"https://…","agents":3,
//	 "version":"1.2.0","started_at":"…","sent_at":"…"}
type Heartbeat struct {
	NodeID     string    `json:"node_id"`
	Name       string    `json:"name"`
	AgentURL   string    `json:"agent_url,omitempty"`
	IngressURL string    `json:"ingress_url,omitempty"`
	Agents     int       `json:"agents"`
	Version    string    `json:"version,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	SentAt     time.Time `json:"sent_at"`
}

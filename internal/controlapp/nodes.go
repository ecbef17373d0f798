package controlapp

import (
	"context"
	"sync"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/nodeapp"
)

// LocalControlPlane is the control plane as a node in the same process sees it (`serve`): the
// log's description read from the store, enrollment as a command of actor.
type LocalControlPlane struct {
	Store   *eventstore.Store
	Service *commands.Service
	Actor   string

	mu    sync.Mutex
	fixed nodeapp.LogInfo // origin and genesis never change
}

// Log is the log's origin, genesis hash and size now.
func (l *LocalControlPlane) Log(ctx context.Context) (nodeapp.LogInfo, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fixed.Origin == "" {
		origin, err := l.Store.Origin(ctx)
		if err != nil {
			return nodeapp.LogInfo{}, err
		}
		genesis, err := l.Store.GenesisHash(ctx)
		if err != nil {
			return nodeapp.LogInfo{}, err
		}
		l.fixed = nodeapp.LogInfo{Origin: origin, GenesisHash: genesis}
	}
	info := l.fixed
	var err error
	info.Size, err = l.Store.Head(ctx)
	return info, err
}

// Enroll runs EnrollNode as the actor.
func (l *LocalControlPlane) Enroll(ctx context.Context, e nodeapp.Enrollment) error {
	_, err := l.Service.Handlers.EnrollNode.Handle(commands.WithActor(ctx, commands.Actor{ID: l.Actor}), EnrollNode(e))
	return err
}

// EnrollNode is the command an enrollment asks for.
func EnrollNode(e nodeapp.Enrollment) commands.EnrollNode {
	return commands.EnrollNode{NodeID: e.NodeID, Name: e.Name, HostKey: e.HostKey, HostKeyFingerprint: e.HostKeyFingerprint,
		EventKey: e.EventKey, AgentURL: e.AgentURL, IngressURL: e.IngressURL}
}

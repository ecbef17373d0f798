package store

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelplane/tunnelplane/bus/controlbus"
	"github.com/tunnelplane/tunnelplane/bus/nodebus"
	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/projections"
)

// NodeFactsPath is the control plane's path of a node's facts, assembled for a bench: a scratch
// log, an embedded NATS with the streams, the ingester, the projections named, and the
// publisher of a node whose key the log holds.
type NodeFactsPath struct {
	Log    *eventstore.Store
	Pub    *nodebus.Publisher
	NodeID string
}

// StartNodeFactsPath starts a NodeFactsPath; stop takes it down and drops the database. prefix
// names the scratch database and temporary directory, op what is wrong ("bench calls").
func StartNodeFactsPath(ctx context.Context, adminURL, prefix, op string, names []string, logger *slog.Logger) (_ *NodeFactsPath, stop func(), err error) {
	var undo []func()
	stop = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	sl, closeLog, err := NewScratchLog(ctx, adminURL, prefix, op, logger)
	if err != nil {
		return nil, nil, err
	}
	undo = append(undo, closeLog)
	dir, err := os.MkdirTemp("", prefix+"-")
	if err != nil {
		return nil, nil, err
	}
	undo = append(undo, func() { os.RemoveAll(dir) })
	srv, err := controlbus.StartEmbedded(ctx, controlbus.EmbeddedConfig{Dir: dir + "/nats", Port: -1, Logger: logger})
	if err != nil {
		return nil, nil, err
	}
	undo = append(undo, srv.Shutdown)
	nc, err := wire.Connect(srv.ClientURL(), wire.ConnectConfig{Name: prefix, Logger: logger})
	if err != nil {
		return nil, nil, err
	}
	undo = append(undo, nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, nil, err
	}
	if err := controlbus.EnsureStreams(ctx, js, controlbus.StreamsConfig{}); err != nil {
		return nil, nil, err
	}
	p := &NodeFactsPath{Log: sl.Store, NodeID: uuid.NewString()}
	key, err := eventstore.GenerateSigningKey()
	if err != nil {
		return nil, nil, err
	}
	if _, err := sl.Store.AddKey(ctx, nil, eventstore.PurposeNode, p.NodeID, key); err != nil {
		return nil, nil, fmt.Errorf("%s: enroll the node's key: %w", op, err)
	}
	in, err := controlbus.NewIngester(controlbus.IngesterConfig{Store: sl.Store, Conn: nc, Logger: logger})
	if err != nil {
		return nil, nil, err
	}
	if err := in.Start(ctx); err != nil {
		return nil, nil, err
	}
	undo = append(undo, in.Stop)
	var ps []projections.Projection
	for _, n := range names {
		ps = append(ps, projections.ByName(n))
	}
	runner, err := projections.New(projections.Config{Store: sl.Store, Projections: ps, Logger: logger})
	if err != nil {
		return nil, nil, err
	}
	if err := runner.Start(ctx); err != nil {
		return nil, nil, err
	}
	undo = append(undo, runner.Stop)
	if p.Pub, err = nodebus.NewPublisher(nodebus.PublisherConfig{NodeID: p.NodeID, Key: key, Conn: nc, SpoolDir: dir + "/spool", Logger: logger}); err != nil {
		return nil, nil, err
	}
	undo = append(undo, p.Pub.Stop)
	return p, stop, nil
}

package nodeapp

import (
	"context"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/dataplane/view"
)

// commandDecisionWait bounds how long a command waits for the decision it names to reach the
// view (the command and the relayed log travel separately).
const commandDecisionWait = 15 * time.Second

// resolveCommand returns the command to run for one that came over NATS: the one the log's
// decision under its id implies (wire.Decision.Command, the rule the control plane's reactor
// sends by), whatever else the message says. A command whose id names no decision of the log, a
// decision that implies another kind of command, or a drain of another node, is refused.
func resolveCommand(ctx context.Context, v *view.View, nodeID string, cmd wire.Command) (wire.Command, error) {
	ctx, cancel := context.WithTimeout(ctx, commandDecisionWait)
	defer cancel()
	d, err := v.Decided(ctx, cmd.ID())
	if err != nil {
		return nil, err
	}
	want, ok := d.Command(cmd.ID())
	if ok && want.CommandName() == cmd.CommandName() {
		if drain, isDrain := want.(wire.DrainNode); !isDrain || drain.NodeID == nodeID {
			return want, nil
		}
	}
	return nil, fmt.Errorf("the log's decision %s is a %s (%+v), not what %s carries out here", cmd.ID(), d.Type, d, cmd.CommandName())
}

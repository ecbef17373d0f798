package wire

import (
	"errors"
	"strings"
	"testing"
)

// The default installation keeps the names every release used; a cluster name prefixes every
// stream, bucket, subject and consumer, so two installations share nothing on one server.
func TestNamesPrefixEverything(t *testing.T) {
	var def Names
	got := []string{def.EventsStream(), def.NodeFactsStream(), def.CommandsStream(), def.NodesBucket(), def.EventsSubjects(),
		def.EventSubject("tunnel.created"), def.NodeFactsSubjects(), def.NodeFactsSubject("n1"), def.CommandsSubjects(),
		def.CommandTopic("drain_node"), def.CommandConsumer("n1", "drain_node"), def.CommandDeliverSubject("n1", "drain_node"),
		def.IngesterConsumer()}
	want := []string{"TP_EVENTS", "TP_NODEFACTS", "TP_COMMANDS", "tp_nodes", "events.>", "events.tunnel.created", "nodefacts.*",
		"nodefacts.n1", "commands.>", "commands.drain_node", "tp_node_n1_drain_node", "_tp.cmd.n1.drain_node", "tp_ingester"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("default names\n got %v\nwant %v", got, want)
	}
	acme, err := NewNames("acme-prod")
	if err != nil {
		t.Fatal(err)
	}
	prefixed := []string{acme.EventsStream(), acme.NodeFactsStream(), acme.CommandsStream(), acme.NodesBucket(), acme.EventsSubjects(),
		acme.EventSubject("tunnel.created"), acme.NodeFactsSubjects(), acme.NodeFactsSubject("n1"), acme.CommandsSubjects(),
		acme.CommandTopic("drain_node"), acme.CommandConsumer("n1", "drain_node"), acme.CommandDeliverSubject("n1", "drain_node"),
		acme.IngesterConsumer()}
	for i, p := range prefixed {
		if !strings.HasPrefix(p, "acme-prod_") && !strings.HasPrefix(p, "acme-prod.") {
			t.Errorf("%s is not prefixed with the cluster name (default %s)", p, want[i])
		}
	}
	id := "7b0c2a4e-5f1d-4e8a-9c3b-2d6f8a1e0b4c"
	if got, ok := acme.NodeIDFromSubject(acme.NodeFactsSubject(id)); !ok || got != id {
		t.Errorf("node id from a prefixed subject: %q %v", got, ok)
	}
	if _, ok := acme.NodeIDFromSubject(def.NodeFactsSubject(id)); ok {
		t.Error("a prefixed installation took another installation's subject")
	}
	if _, ok := def.NodeIDFromSubject(acme.NodeFactsSubject(id)); ok {
		t.Error("the default installation took a prefixed installation's subject")
	}
	for _, bad := range []string{"Acme", "a.b", "a b", "a*", "a>", "-a", "a-", strings.Repeat("a", 33), "a_b"} {
		if _, err := NewNames(bad); !errors.Is(err, ErrInvalidCluster) {
			t.Errorf("cluster name %q accepted", bad)
		}
	}
}

func TestDescriptionStamp(t *testing.T) {
	d := StampedDescription("tunnelplane event log", "tunnelplane/log/x")
	if DescriptionStamp(d) != "tunnelplane/log/x" || DescriptionStamp("tunnelplane event log") != "" || StampedDescription("d", "") != "d" {
		t.Fatalf("stamp round trip: %q", d)
	}
}

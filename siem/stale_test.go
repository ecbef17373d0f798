package siem_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/tunnelplane/tunnelplane/siem"
)

// A connection opened ahead whose receiver went away before the batch was written must not
// take the receiver's earlier close for the acknowledgement: Send refuses it, and the batch
// counts as not delivered.
func TestAConnectionClosedBeforeTheBatchIsNotAnAcknowledgement(t *testing.T) {
	t.Parallel()
	r := startRsyslog(t)
	s := r.sender(t, nil)
	ctx := context.Background()
	d, err := s.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	r.Stop() // rsyslog closes its connections and exits; its FIN is on the loopback at once
	err = d.Send([][]byte{[]byte("<14>1 2026-12-02T06:00:00Z cp-1 tunnelplane - - - one message")})
	if err == nil {
		if ackErr := d.Ack(); ackErr == nil {
			t.Fatal("a batch sent after the receiver stopped was acknowledged: lost, taken as delivered")
		}
		t.Fatal("Send did not see that the receiver had closed the connection")
	}
	if err == nil || !errors.Is(err, siem.ErrNotAcknowledged) || !strings.Contains(err.Error(), "closed the connection before the batch was sent") {
		t.Fatalf("send on a connection the receiver closed: %v", err)
	}
}

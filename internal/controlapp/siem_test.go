package controlapp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/hectest"
	"github.com/tunnelplane/tunnelplane/internal/logtest"
	"github.com/tunnelplane/tunnelplane/internal/poll"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
	"github.com/tunnelplane/tunnelplane/siem"
)

// siemRig is a log with its projections running and a key to seal sinks' secrets with.
type siemRig struct {
	log     *logtest.Log
	runner  *projections.Runner
	secrets *siem.Secrets
}

func newSIEMRig(t *testing.T) *siemRig {
	t.Helper()
	log := logtest.Start(t, 10*time.Millisecond)
	runner, err := projections.New(projections.Config{Store: log.Store, Projections: projections.All()})
	if err != nil {
		t.Fatal(err)
	}
	if err := runner.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(runner.Stop)
	secrets, err := siem.NewSecrets(bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return &siemRig{log: log, runner: runner, secrets: secrets}
}

// configure records a platform HEC sink to url with token, and waits until the sinks view has it.
func (r *siemRig) configure(t *testing.T, name, url, ca, token string) string {
	t.Helper()
	sealed, err := r.secrets.Seal("token", []byte(token))
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	ev, err := domain.ConfigureSIEMSink(domain.NewSIEMSink{SinkID: id, Spec: domain.SIEMSinkSpec{Name: name, Transport: domain.SIEMTransportHTTPS,
		URL: url, Profile: domain.SIEMProfileHEC, Format: domain.SIEMFormatOCSF, Token: sealed, CACertPEM: ca, ServerName: "example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.log.Store.Append(context.Background(), domain.SIEMSinkStream(id), eventstore.NoStream,
		eventstore.EventData{Type: domain.TypeSIEMSinkConfigured, Payload: b})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.runner.WaitFor(context.Background(), res.LastPosition, projections.SIEMSinks); err != nil {
		t.Fatal(err)
	}
	return id
}

func (r *siemRig) sinks(t *testing.T, timeout time.Duration) *controlapp.SIEMSinks {
	t.Helper()
	s, err := controlapp.NewSIEMSinks(controlapp.SIEMSinksConfig{Store: r.log.Store, Pool: r.log.Pool, Sinks: readmodels.New(r.log.Pool),
		Poll: 50 * time.Millisecond, Options: siem.SinkOptions{Hostname: "cp", Product: siem.DefaultProduct("test"), Secrets: r.secrets, Timeout: timeout}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func (r *siemRig) appendOrgs(t *testing.T, n int) uint64 {
	t.Helper()
	for range n {
		org := uuid.NewString()
		b, _ := json.Marshal(domain.OrganizationCreated{OrgID: org, Name: "o" + org[:8], CreatedBy: "test"})
		if _, err := r.log.Store.Append(context.Background(), domain.OrgStream(org), eventstore.NoStream,
			eventstore.EventData{Type: domain.TypeOrganizationCreated, Payload: b}); err != nil {
			t.Fatal(err)
		}
	}
	head, err := r.log.Store.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return head
}

// hungReceiver is the address of a receiver that accepts connections and never reads or answers.
func hungReceiver(t *testing.T) string {
	t.Helper()
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hole.Close() })
	go func() {
		for {
			c, err := hole.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() }) // held open, never read
		}
	}()
	return hole.Addr().String()
}

// A receiver that accepts connections and never answers holds its own sink only: another sink
// of the same control plane delivers the whole log meanwhile.
func TestADeadSinkDelaysNoOther(t *testing.T) {
	t.Parallel()
	r := newSIEMRig(t)
	hec := hectest.New(t, "tok")
	r.configure(t, "dead", "https://"+hungReceiver(t)+hectest.Path, hec.CACertPEM(), "tok")
	r.configure(t, "alive", hec.URL(), hec.CACertPEM(), "tok")
	head := r.appendOrgs(t, 300)
	r.sinks(t, time.Minute)
	poll.Until(t, 20*time.Second, "the live sink delivers the whole log", func() bool { return len(hec.Received()) >= int(head) })
	for seq := 1; seq <= int(head); seq++ {
		if len(hec.Received()[strconv.Itoa(seq)]) == 0 {
			t.Fatalf("sequence %d missing", seq)
		}
	}
}

// Two control plane instances: one forwards (the lock), the other waits; when the first stops,
// the second takes over from the cursor, and the receiver's sequence has no hole.
func TestOneInstanceForwardsAndAnotherTakesOver(t *testing.T) {
	t.Parallel()
	r := newSIEMRig(t)
	hec := hectest.New(t, "tok")
	r.configure(t, "soc", hec.URL(), hec.CACertPEM(), "tok")
	head := r.appendOrgs(t, 100)
	first := r.sinks(t, 10*time.Second)
	poll.Until(t, 10*time.Second, "the first instance leads", first.Leading)
	second := r.sinks(t, 10*time.Second)
	poll.Until(t, 20*time.Second, "the log delivered", func() bool { return len(hec.Received()) >= int(head) })
	time.Sleep(200 * time.Millisecond) // several polls of the second
	if second.Leading() {
		t.Fatal("both instances lead")
	}
	posts := hec.Posts()
	first.Stop()
	poll.Until(t, 10*time.Second, "the second instance takes over", second.Leading)
	head = r.appendOrgs(t, 100)
	poll.Until(t, 20*time.Second, "the second delivers what came since", func() bool { return len(hec.Received()) >= int(head) })
	got := hec.Received()
	for seq := 1; seq <= int(head); seq++ {
		if len(got[strconv.Itoa(seq)]) == 0 {
			t.Fatalf("sequence %d missing after the takeover", seq)
		}
	}
	if hec.Posts() == posts {
		t.Fatal("nothing posted after the takeover")
	}
	t.Logf("posts before and after the takeover: %d, %d", posts, hec.Posts())
}

// A record the receiver refuses holds the sink until an operator's skip reaches the log: the
// running forwarder takes the skip and delivers the rest; the skipped record's number stays unused.
func TestASkipInTheLogMovesARefusingSinkOn(t *testing.T) {
	t.Parallel()
	r := newSIEMRig(t)
	hec := hectest.New(t, "tok")
	id := r.configure(t, "soc", hec.URL(), hec.CACertPEM(), "tok")
	head := r.appendOrgs(t, 50)
	recs, err := r.log.Store.ReadAll(context.Background(), 0, int(head))
	if err != nil {
		t.Fatal(err)
	}
	poison := recs[len(recs)-10]
	hec.Refuse(poison.EventID.String())
	r.sinks(t, 10*time.Second)
	poll.Until(t, 20*time.Second, "everything before the refused record delivered", func() bool { return len(hec.Received()) >= int(poison.Position) })
	time.Sleep(200 * time.Millisecond)
	if got := hec.Received()[strconv.Itoa(int(poison.Position)+1)]; len(got) != 0 {
		t.Fatalf("the refused record arrived: %v", got)
	}
	b, _ := json.Marshal(domain.SIEMDeliverySkipped{SinkID: id, Position: poison.Position, Reason: "refused for good"})
	res, err := r.log.Store.Append(context.Background(), domain.SIEMSinkStream(id), eventstore.Exact(1),
		eventstore.EventData{Type: domain.TypeSIEMDeliverySkipped, Payload: b})
	if err != nil {
		t.Fatal(err)
	}
	// Everything after it arrives, the skip event included (a platform sink forwards it too).
	poll.Until(t, 20*time.Second, "the rest delivered after the skip", func() bool { return len(hec.Received()) >= int(res.LastPosition) })
	got := hec.Received()
	for pos := uint64(0); pos <= res.LastPosition; pos++ {
		n := len(got[strconv.Itoa(int(pos)+1)])
		if (pos == poison.Position) != (n == 0) {
			t.Fatalf("position %d arrived %d times", pos, n)
		}
	}
}

package commands_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// The log's own records (a key rotated, added, revoked) say who asked, under which correlation
// and request ids and by which command, as every other record does: "who rotated the log key"
// has an answer in the log.
func TestLogRecordsCarryTheActor(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.bootstrap(t)
	ctx := commands.WithActor(context.Background(), commands.Actor{ID: "root", ClientIP: "203.0.113.9", UserAgent: "rotator/1",
		RequestID: "req-rot-1", CorrelationID: "corr-rot-1"})
	logRot, err := h.svc.Handlers.RotateSigningKey.Handle(ctx, commands.RotateSigningKey{Purpose: "log"})
	if err != nil {
		t.Fatal(err)
	}
	tokRot, err := h.svc.Handlers.RotateSigningKey.Handle(ctx, commands.RotateSigningKey{Purpose: "token"})
	if err != nil {
		t.Fatal(err)
	}

	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	sshPub, _ := ssh.NewPublicKey(pub)
	eventKey, err := eventstore.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	origin, err := h.store.Origin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nodeID := uuid.NewString()
	enrollCtx := commands.WithActor(context.Background(), commands.Actor{ID: "root", RequestID: "req-enroll", CorrelationID: "corr-enroll"})
	enrolled, err := h.svc.Handlers.EnrollNode.Handle(enrollCtx, commands.EnrollNode{NodeID: nodeID, Name: "node-1",
		HostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))), HostKeyFingerprint: ssh.FingerprintSHA256(sshPub),
		EventKey: eventstore.NewKeyAdded(origin, eventstore.PurposeNode, nodeID, eventKey)})
	if err != nil {
		t.Fatal(err)
	}
	removeCtx := commands.WithActor(context.Background(), commands.Actor{ID: "root", RequestID: "req-remove", CorrelationID: "corr-remove"})
	removed, err := h.svc.Handlers.RemoveNode.Handle(removeCtx, commands.RemoveNode{NodeID: nodeID, Reason: "decommissioned"})
	if err != nil {
		t.Fatal(err)
	}

	recs, err := h.store.ReadStream(ctx, eventstore.LogStream, 1, 100)
	if err != nil {
		t.Fatal(err)
	}
	byPos := map[uint64]eventstore.Record{}
	for _, r := range recs {
		byPos[r.Position] = r
	}
	check := func(what string, pos uint64, typ, command, requestID, correlationID string) {
		t.Helper()
		// A key record is the first of its batch; a command's result names the batch's last position.
		var rec *eventstore.Record
		for p := pos + 1; p > 0; p-- {
			if r, ok := byPos[p-1]; ok && r.Type == typ {
				rec = &r
				break
			}
		}
		if rec == nil {
			t.Fatalf("%s: no %s record at or before position %d", what, typ, pos)
		}
		var m domain.Metadata
		if err := json.Unmarshal(rec.Metadata, &m); err != nil {
			t.Fatalf("%s: metadata %s: %v", what, rec.Metadata, err)
		}
		if m.Actor != "root" || m.Command != command || m.RequestID != requestID || m.CorrelationID != correlationID || m.OccurredAt.IsZero() {
			t.Fatalf("%s: the %s record at %d has metadata %s, want actor root, command %s, request %s, correlation %s",
				what, typ, rec.Position, rec.Metadata, command, requestID, correlationID)
		}
	}
	check("log key rotation", logRot.Position, eventstore.TypeKeyRotated, "RotateSigningKey", "req-rot-1", "corr-rot-1")
	check("token key rotation", tokRot.Position, eventstore.TypeKeyRotated, "RotateSigningKey", "req-rot-1", "corr-rot-1")
	check("node key added", enrolled.Position, eventstore.TypeKeyAdded, "EnrollNode", "req-enroll", "corr-enroll")
	check("node key revoked", removed.Position, eventstore.TypeKeyRevoked, "RemoveNode", "req-remove", "corr-remove")
	// The client address is kept as in other records' metadata.
	var m domain.Metadata
	_ = json.Unmarshal(byPos[logRot.Position].Metadata, &m)
	if m.ClientIP != "203.0.113.9" || m.UserAgent != "rotator/1" {
		t.Fatalf("log rotation metadata %s", byPos[logRot.Position].Metadata)
	}
	// The log still verifies with metadata on its own records.
	rep, err := eventstore.Verify(ctx, h.store.Pool(), eventstore.VerifyOptions{})
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %+v %v", rep.Failure, err)
	}
}

package pii_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/compliance/pii"
	"github.com/tunnelplane/tunnelplane/domain"
)

// The store's Seal hook on a command's metadata (a cached key), against the same metadata passed
// through untouched (no personal data): the cost each API command pays.
func BenchmarkSealEvent(b *testing.B) {
	k, _ := newKeyringB(b)
	ctx := context.Background()
	with, _ := json.Marshal(domain.Metadata{Actor: "user-1", OrgID: "org-1", CorrelationID: "c", RequestID: "r", ClientIP: "198.51.100.7",
		UserAgent: "Mozilla/5.0 (X11; Linux x86_64) tunnelplane-cli/1.0", Command: "UpdateTunnel", OccurredAt: time.Now().UTC()})
	without, _ := json.Marshal(domain.Metadata{Actor: "user-1", OrgID: "org-1", CorrelationID: "c", RequestID: "r", Command: "UpdateTunnel", OccurredAt: time.Now().UTC()})
	payload := []byte(`{"tunnel_id":"t","upstream":"http://127.0.0.1:1"}`)
	for _, c := range []struct {
		name string
		meta []byte
	}{{"sealed", with}, {"baseline-no-personal-data", without}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, _, err := k.SealEvent(ctx, domain.TypeTunnelUpdated, payload, c.meta); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// And a reader opening a sealed value (a cached key).
func BenchmarkOpen(b *testing.B) {
	k, _ := newKeyringB(b)
	ctx := context.Background()
	v, err := k.Seal(ctx, "user-1", pii.FieldClientIP, "198.51.100.7")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := k.Open(ctx, pii.FieldClientIP, v); err != nil {
			b.Fatal(err)
		}
	}
}

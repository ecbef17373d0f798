package siem_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/compliance/pii"
	"github.com/tunnelplane/tunnelplane/compliance/pii/sealbox"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/siem"
)

// A sink with the keyring sends the plaintext of sealed addresses (OCSF and CEF), and "[erased]"
// once the subject was erased; the raw format sends the signed, sealed bytes.
func TestSinksOpenSealedPersonalData(t *testing.T) {
	t.Parallel()
	u := pgtest.NewDatabase(t)
	kek, _ := pii.NewFileKEK(bytes.Repeat([]byte{5}, 32))
	k, err := pii.New(pii.Config{Pool: pgtest.Pool(t, u), KEK: kek})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const ip, ua = "198.51.100.23", "siem-personal-test/1.0"
	rec := record(t, 9, domain.TunnelDeleted{TunnelID: "t-1", OrgID: "o-1"}, domain.Metadata{Actor: "dana", OrgID: "o-1", ClientIP: ip, UserAgent: ua})
	fail := record(t, 10, domain.AuthFailed{Reason: "bad token", RemoteAddr: ip + ":5000", UserAgent: ua, Count: 2, At: time.Now().UTC()},
		domain.Metadata{Actor: pii.Anonymous, ClientIP: ip + ":5000", UserAgent: ua})
	for _, r := range []*struct {
		payload, meta *[]byte
		typ           string
	}{{&rec.Payload, &rec.Metadata, rec.Type}, {&fail.Payload, &fail.Metadata, fail.Type}} {
		if *r.payload, *r.meta, err = k.SealEvent(ctx, r.typ, *r.payload, *r.meta); err != nil {
			t.Fatal(err)
		}
	}
	fail.StoredPayload = fail.Payload
	// A node fact: the node sealed the agent's address to the token issuer's sealing key.
	pub, gen, err := k.SealingKey(ctx, "erin")
	if err != nil {
		t.Fatal(err)
	}
	addr, err := sealbox.Seal(pub, "erin", gen, pii.FieldRemoteAddr, ip+":6000")
	if err != nil {
		t.Fatal(err)
	}
	conn := record(t, 11, domain.AgentConnected{NodeID: "n-1", SessionID: "s-1", OrgID: "o-1", TunnelID: "t-1", TokenID: "k-1", RemoteAddr: addr},
		domain.Metadata{Actor: "node:n-1", OrgID: "o-1"})
	formats := map[string]func(siem.Entry) (string, error){
		"ocsf": func(e siem.Entry) (string, error) {
			b, err := siem.OCSF(e, siem.DefaultProduct("t"))
			return string(b), err
		},
		"cef": func(e siem.Entry) (string, error) { return siem.CEF(e, siem.DefaultProduct("t")) },
	}
	check := func(want string, absent ...string) {
		t.Helper()
		for name, format := range formats {
			for _, r := range []*siemRecord{{rec}, {fail}, {conn}} {
				if name == "cef" && r.rec == conn {
					continue // CEF's agent.connected names no address
				}
				msg, err := format(siem.Entry{Record: r.rec, Seq: 1, Personal: k})
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if !strings.Contains(msg, want) {
					t.Errorf("%s of %s does not hold %q:\n%s", name, r.rec.Type, want, msg)
				}
				for _, a := range absent {
					if strings.Contains(msg, a) {
						t.Errorf("%s of %s holds %q:\n%s", name, r.rec.Type, a, msg)
					}
				}
			}
		}
	}
	check(ip) // (the formats carry no user agent; the payload copy in OCSF's unmapped stays sealed)
	if raw, err := siem.Raw(siem.Entry{Record: rec, Seq: 1, Personal: k}); err != nil || bytes.Contains(raw, []byte(ip)) {
		t.Fatalf("the raw format holds the plaintext (%v): %s", err, raw)
	}
	for _, s := range []string{"dana", pii.Anonymous, "erin"} {
		if _, err := k.Erase(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	check("[erased]", ip, ua)
}

type siemRecord struct{ rec *eventstore.Record }

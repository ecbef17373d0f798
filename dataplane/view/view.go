package view

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/compliance/pii/sealbox"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

// Event is one relayed log record, as much of it as the view needs. A view made by NewVerified
// takes everything from Record, after checking it continues the log as the log's keys signed it.
type Event struct {
	Position uint64
	EventID  string // kept for the snapshot: it tells a log that was rewritten under it
	StreamID string
	Type     string
	Payload  []byte
	// RecordedAt is when the log recorded it (from Record in a verified view; zero: now).
	RecordedAt time.Time
	// Record and Checkpoint (the signed checkpoint that came with it, if any) are what a
	// verified view checks.
	Record     *ledger.Record
	Checkpoint string
}

// RotatedUserKeyGrace is how long user tokens signed by a rotated token key still pass the
// ingress, as the admin API's default (api.DefaultRotatedTokenKeyGrace). Agent tokens, which live
// for weeks, pass until they expire or their key is revoked.
const RotatedUserKeyGrace = 24 * time.Hour

// Decision is a decision of the control plane recorded in the log that a node acts on when a
// command names it (the command's id is the event's id); wire.Decision.Command says what runs.
type Decision = wire.Decision

// Hooks are called (outside the view's lock) when something the node must act on at once changes.
type Hooks struct {
	TokenRevoked  func(tokenID, reason string)
	TunnelDeleted func(tunnelID, reason string)
	// AccessWithdrawn: a decision AuthorizeIngress allowed before may now be a denial (a role
	// removed, a grant revoked or expired, an access key revoked, a tunnel deleted, a token key
	// revoked).
	AccessWithdrawn func()
	// CredentialsRevoked: a token key was revoked; a credential AuthenticateCaller accepted
	// before may now be refused (the user tokens it signed, the access keys derived from it).
	CredentialsRevoked func()
	// DrainRequested: the control plane asked a node to drain (it stays draining).
	DrainRequested func(nodeID string)
}

// accessKey is a tunnel access key as the log issued it (and maybe revoked it).
type accessKey struct {
	id, orgID, tunnelID, hash string
	selector                  map[string]string // a key scoped by labels (tunnelID "")
	derivedFrom               string            // token key id ("" unknown)
	expiresAt                 time.Time
	cidrs                     []netip.Prefix
	revoked                   bool
}

// grant lets a user, or the users whose tokens carry a group, call a tunnel until expiresAt.
// Ended grants (revoked, or their expiry recorded) are forgotten.
type grant struct {
	id, orgID, tunnelID string
	kind, subject       string // domain.GrantToUser or domain.GrantToGroup, and whom
	expiresAt           time.Time
}

// tokenGroups are the groups the newest user token the view verified for a user carried
// (newest by issue time), until that token expires.
type tokenGroups struct {
	groups            []string
	issued, expiresAt time.Time
}

// Bounds of what callers' tokens can make the view keep: users whose groups are remembered, and
// groups per token (more are ignored: a group a grant is not found by only refuses).
const (
	maxGroupUsers     = 100_000
	maxGroupsPerToken = 256
)

type tunnel struct {
	id, orgID, name, owner, upstream, protocol string
	deleted                                    bool
	calls                                      bool // access log domain.AccessLogCalls: nodes record each call
	labels                                     map[string]string
	cors                                       *node.CORS // nil: none (replaced whole, never changed)
}

// route is t as the ingress addresses it.
func (t *tunnel) route() node.Route {
	return node.Route{OrgID: t.orgID, TunnelID: t.id, Name: t.name, Calls: t.calls, CORS: t.cors}
}

// setCORS sets t's cross-origin setting from the log's (CORSOff, or one the view cannot read: none).
func (t *tunnel) setCORS(c domain.TunnelCORS) {
	switch c.Mode {
	case domain.CORSPassthrough:
		t.cors = &node.CORS{Passthrough: true}
	case domain.CORSOrigins:
		t.cors = &node.CORS{Origins: slices.Clone(c.Origins)}
	default:
		t.cors = nil
	}
}

// corsOf is t's setting as the log records it (for the snapshot).
func (t *tunnel) corsOf() *domain.TunnelCORS {
	switch {
	case t.cors == nil:
		return nil
	case t.cors.Passthrough:
		return &domain.TunnelCORS{Mode: domain.CORSPassthrough}
	}
	return &domain.TunnelCORS{Mode: domain.CORSOrigins, Origins: t.cors.Origins}
}

// View is safe for concurrent use: Apply from one consumer, lookups from many requests.
type View struct {
	mu         sync.RWMutex
	keys       *token.KeySet
	tunnels    map[string]*tunnel              // by id
	byName     map[string]map[string]string    // org id → name → tunnel id (active only)
	orgs       map[string]string               // org id → name
	orgByName  map[string]string               // name → org id
	roles      map[string]map[domain.Role]bool // org|user → roles
	revoked    map[string]bool                 // agent token ids
	sealKeys   map[string]sealKey              // agent token id → its issuer's sealing key (unexpired tokens)
	sealPrune  int                             // len(sealKeys) at which expired ones are dropped next
	accessKeys map[string]*accessKey           // access keys by id
	keyByHash  map[string]*accessKey           // access keys by domain.HashAccessKey of the secret
	grants     map[string]map[string]*grant    // tunnel id → grant id → grant (not ended)
	grantByID  map[string]*grant
	decisions  map[string]Decision   // by event id
	rotated    map[string]time.Time  // token key id → when it was rotated out
	deleted    map[string]time.Time  // org|user (PlatformOrg|user: everywhere) → when the user was last deleted there
	chain      *ledger.ChainVerifier // nil: events are taken as they come (tests)
	position   int64
	lastID     string // EventID at position
	hooks      Hooks
	issuer     string
	leeway     time.Duration // token.DefaultLeeway unless SetTokenLeeway
	now        func() time.Time

	changed chan struct{}

	groupsMu sync.Mutex
	groups   map[string]tokenGroups // user id → groups of the newest token verified

	target int64       // ReadyAt's position (under mu); -2 until ReadyAt is called
	ready  atomic.Bool // position >= target
}

// New returns an empty view that takes events as they come. issuer is the iss of control-plane
// tokens. Nodes use NewVerified.
func New(issuer string, hooks Hooks) *View {
	return &View{keys: token.NewKeySet(), tunnels: map[string]*tunnel{}, byName: map[string]map[string]string{}, orgs: map[string]string{},
		orgByName: map[string]string{}, roles: map[string]map[domain.Role]bool{}, revoked: map[string]bool{}, decisions: map[string]Decision{},
		accessKeys: map[string]*accessKey{}, keyByHash: map[string]*accessKey{},
		grants: map[string]map[string]*grant{}, grantByID: map[string]*grant{}, groups: map[string]tokenGroups{},
		rotated: map[string]time.Time{}, deleted: map[string]time.Time{}, sealKeys: map[string]sealKey{}, sealPrune: minSealPrune,
		position: -1, hooks: hooks, issuer: issuer, leeway: token.DefaultLeeway, now: time.Now, changed: make(chan struct{}), target: -2}
}

// SetTokenLeeway sets how far past expiry tokens are still accepted; call it before the view is
// used.
func (v *View) SetTokenLeeway(d time.Duration) { v.leeway = d }

// NewVerified returns an empty view that takes only what the log named origin, whose first record
// hashes to genesis (from the control plane, not from NATS), holds: each event
// must carry its Record, which must be the next record of that log, hash-chained to the one
// before and signed by a key of the log's key history in force at its position
// (ledger.ChainVerifier). Anyone else who can publish on NATS cannot change what the node
// decides; Apply refuses their messages with an error wrapping ledger.ErrUnverified.
func NewVerified(issuer, origin string, genesis []byte, hooks Hooks) *View {
	v := New(issuer, hooks)
	v.chain = ledger.NewChainVerifier(origin, genesis, domain.NodeFactsStream)
	v.chain.AcceptWithheld(skippable)
	return v
}

// ReadyAt sets the position the view must have applied before Ready reports it ready: the last
// position the relayed log held when the node started (-1 for an empty log). Until then a
// revocation, a deletion or a removed role may still be ahead in the replay, and deciding on the
// partial view could let in what the control plane has shut out.
func (v *View) ReadyAt(target int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.target = target
	v.settleReady()
}

// Target is the position ReadyAt last set (-2 before).
func (v *View) Target() int64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.target
}

// settleReady sets ready from position and target; v.mu is held.
func (v *View) settleReady() { v.ready.Store(v.target >= -1 && v.position >= v.target) }

// Ready is nil once the view has applied ReadyAt's position; before, an error saying how far
// the replay is.
func (v *View) Ready() error {
	if v.ready.Load() {
		return nil
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.target < -1 {
		return errors.New("the node has not yet looked at the control plane's event log")
	}
	return fmt.Errorf("the node is catching up with the control plane's event log (%d of %d events applied)", v.position+1, v.target+1)
}

// Last is the last applied log position (-1 before any) and its event id.
func (v *View) Last() (int64, string) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.position, v.lastID
}

// Position is the last applied log position (-1 before any).
func (v *View) Position() int64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.position
}

// WaitFor blocks until the view has applied pos or ctx ends.
func (v *View) WaitFor(ctx context.Context, pos uint64) error {
	for {
		v.mu.RLock()
		done, ch := v.position >= int64(pos), v.changed
		v.mu.RUnlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Apply folds one event in. Events at or below the current position are ignored (redelivery).
func (v *View) Apply(e Event) error {
	var after []func()
	v.mu.Lock()
	if int64(e.Position) <= v.position {
		v.mu.Unlock()
		return nil
	}
	events := []Event{e}
	if v.chain != nil {
		r := e.Record
		if r == nil || r.Position != e.Position {
			v.mu.Unlock()
			return fmt.Errorf("%w: position %d comes without its record", ledger.ErrUnverified, e.Position)
		}
		recs, err := v.chain.Offer(r, e.Checkpoint)
		if err != nil {
			v.mu.Unlock()
			return err
		}
		events = events[:0]
		for _, r := range recs {
			events = append(events, Event{Position: r.Position, EventID: r.EventID.String(), StreamID: r.StreamID, Type: r.Type,
				Payload: r.Payload, RecordedAt: r.RecordedAt})
		}
		if len(events) == 0 {
			v.mu.Unlock()
			return nil // held until its batch's checkpoint arrives
		}
	}
	var errs []error
	for _, e := range events {
		if err := v.apply(e, &after); err != nil {
			errs = append(errs, fmt.Errorf("view at position %d (%s): %w", e.Position, e.Type, err))
		}
		v.position, v.lastID = int64(e.Position), e.EventID
	}
	v.settleReady()
	close(v.changed)
	v.changed = make(chan struct{})
	v.mu.Unlock()
	for _, f := range after {
		f()
	}
	return errors.Join(errs...)
}

// Next is the first position the view has not taken (verified and applied).
func (v *View) Next() uint64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return uint64(v.position + 1)
}

func (v *View) apply(e Event, after *[]func()) error {
	if strings.HasPrefix(e.StreamID, domain.NodeFactsStream("")) && !domain.NodeReportable(e.Type) {
		return nil // written around the ingester's check; only the control plane records these
	}
	if h := v.hooks.AccessWithdrawn; h != nil && withdrawsAccess(e) {
		*after = append(*after, h)
	}
	if h := v.hooks.CredentialsRevoked; h != nil && e.StreamID == ledger.LogStream && e.Type == ledger.TypeKeyRevoked {
		*after = append(*after, h)
	}
	if e.StreamID == ledger.LogStream {
		return v.applyKey(e)
	}
	if !domain.NodeNeeds(e.Type) {
		return nil // the view does not need the rest (the relay sends it withheld)
	}
	ev, err := domain.Decode(e.Type, e.Payload)
	if err != nil {
		return err
	}
	switch x := ev.(type) {
	case *domain.OrganizationCreated:
		v.orgs[x.OrgID] = x.Name
		v.orgByName[x.Name] = x.OrgID
	case *domain.TunnelCreated:
		t := &tunnel{id: x.TunnelID, orgID: x.OrgID, name: x.Name, owner: x.Owner, upstream: x.Upstream, protocol: x.Protocol, labels: x.Labels}
		v.tunnels[t.id] = t
		v.names(x.OrgID)[x.Name] = t.id
	case *domain.TunnelUpdated:
		t := v.tunnels[x.TunnelID]
		if t == nil {
			return fmt.Errorf("update of unknown tunnel %s", x.TunnelID)
		}
		if x.Name != nil {
			delete(v.names(t.orgID), t.name)
			t.name = *x.Name
			v.names(t.orgID)[t.name] = t.id
		}
		if x.Upstream != nil {
			t.upstream = *x.Upstream
		}
		if x.Protocol != nil {
			t.protocol = *x.Protocol
		}
		if x.CORS != nil {
			t.setCORS(*x.CORS)
		}
		if x.Labels != nil {
			t.labels = *x.Labels
			// Keys scoped by labels the tunnel no longer carries may not go on calling it.
			if h := v.hooks.AccessWithdrawn; h != nil {
				*after = append(*after, h)
			}
		}
	case *domain.TunnelAccessLogSet:
		t := v.tunnels[x.TunnelID]
		if t == nil {
			return fmt.Errorf("access log of unknown tunnel %s", x.TunnelID)
		}
		t.calls = x.AccessLog == domain.AccessLogCalls
	case *domain.TunnelDeleted:
		t := v.tunnels[x.TunnelID]
		if t == nil {
			return fmt.Errorf("deletion of unknown tunnel %s", x.TunnelID)
		}
		t.deleted = true
		delete(v.names(t.orgID), t.name)
		v.decide(e.EventID, x)
		if h := v.hooks.TunnelDeleted; h != nil {
			id, reason := t.id, "tunnel deleted"
			*after = append(*after, func() { h(id, reason) })
		}
	case *domain.RoleAssigned:
		k := x.OrgID + "|" + x.UserID
		if v.roles[k] == nil {
			v.roles[k] = map[domain.Role]bool{}
		}
		v.roles[k][x.Role] = true
	case *domain.RoleUnassigned:
		delete(v.roles[x.OrgID+"|"+x.UserID], x.Role)
	case *domain.UserDeleted:
		// The caused role.unassigned and grant.revoked come in the same append; what is left is
		// the user's tokens from before, which a group grant would still admit.
		at := e.RecordedAt
		if at.IsZero() {
			at = v.now()
		}
		v.deleted[x.OrgID+"|"+x.UserID] = at
	case *domain.NodeDrainRequested:
		v.decide(e.EventID, x)
		if h := v.hooks.DrainRequested; h != nil {
			id := x.NodeID
			*after = append(*after, func() { h(id) })
		}
	case *domain.AccessKeyIssued:
		return v.putAccessKey(x.KeyID, x.OrgID, x.TunnelID, x.Selector, x.SecretHash, x.DerivedFrom, x.ExpiresAt, x.CIDRs, false)
	case *domain.AccessKeyRevoked:
		// The ingress asks AuthorizeIngress on every request, which reads this; AccessWithdrawn
		// has the node decide its live calls again.
		if k := v.accessKeys[x.KeyID]; k != nil && k.orgID == x.OrgID {
			k.revoked = true
		}
	case *domain.GrantCreated:
		v.putGrant(&grant{id: x.GrantID, orgID: x.OrgID, tunnelID: x.TunnelID, kind: x.SubjectKind, subject: x.Subject, expiresAt: x.ExpiresAt})
	case *domain.GrantRevoked:
		v.endGrant(x.GrantID, x.OrgID)
	case *domain.GrantExpired:
		v.endGrant(x.GrantID, x.OrgID)
	case *domain.AgentTokenIssued:
		v.putSealKey(x)
	case *domain.AgentTokenRevoked:
		v.revoked[x.TokenID] = true
		delete(v.sealKeys, x.TokenID)
		v.decide(e.EventID, x)
		if h := v.hooks.TokenRevoked; h != nil {
			id, reason := x.TokenID, "token revoked"
			*after = append(*after, func() { h(id, reason) })
		}
	}
	return nil
}

// sealKey is the sealing key an agent token's issue record names (node.SealKey).
type sealKey struct {
	subject string
	gen     int
	pub     []byte
	expires time.Time
}

// minSealPrune is the fewest tokens' sealing keys held before expired ones are looked for.
const minSealPrune = 1024

// putSealKey keeps the sealing key of an issued token (under v.mu). Tokens that expired are
// dropped whenever the map has doubled since the last look, so it holds about the live tokens.
// An issue record without a key (before sealing keys existed), or with a key that is not one, is
// kept without: the node then leaves the agent's address out.
func (v *View) putSealKey(x *domain.AgentTokenIssued) {
	pub, err := base64.StdEncoding.DecodeString(x.SealKey)
	if x.SealKey == "" || err != nil || len(pub) != sealbox.KeySize || x.SealGen < 1 || x.IssuedBy == "" {
		return
	}
	v.sealKeys[x.TokenID] = sealKey{subject: x.IssuedBy, gen: x.SealGen, pub: pub, expires: x.ExpiresAt}
	if len(v.sealKeys) < v.sealPrune {
		return
	}
	cutoff := v.now().Add(-v.leeway)
	for id, k := range v.sealKeys {
		if k.expires.Before(cutoff) {
			delete(v.sealKeys, id)
		}
	}
	v.sealPrune = max(minSealPrune, 2*len(v.sealKeys))
}

// putGrant adds a grant (under v.mu).
func (v *View) putGrant(g *grant) {
	m := v.grants[g.tunnelID]
	if m == nil {
		m = map[string]*grant{}
		v.grants[g.tunnelID] = m
	}
	m[g.id] = g
	v.grantByID[g.id] = g
}

// endGrant forgets a revoked or expired grant (under v.mu): it never calls again.
func (v *View) endGrant(id, org string) {
	g := v.grantByID[id]
	if g == nil || g.orgID != org {
		return
	}
	delete(v.grantByID, id)
	delete(v.grants[g.tunnelID], id)
	if len(v.grants[g.tunnelID]) == 0 {
		delete(v.grants, g.tunnelID)
	}
}

// granted tells whether an unexpired, unrevoked grant on t lets user (with groups) call it
// (under v.mu). The expiry counts from its time on, before grant.expired reaches the view.
func (v *View) granted(t *tunnel, user string, groups []string) bool {
	now := v.now()
	for _, g := range v.grants[t.id] {
		if g.orgID != t.orgID || !now.Before(g.expiresAt) {
			continue
		}
		st := domain.GrantState{GrantCreated: domain.GrantCreated{SubjectKind: g.kind, Subject: g.subject}}
		if st.Covers(user, groups) {
			return true
		}
	}
	return false
}

// rememberGroups keeps the groups claim of a verified user token when it is the newest the view
// saw for the user. The map is bounded: when full, expired entries go, then arbitrary ones.
func (v *View) rememberGroups(user string, groups []string, issued, expires time.Time) {
	var keep []string
	for _, g := range groups {
		if len(keep) == maxGroupsPerToken {
			break
		}
		if domain.CheckGroup(g) == nil {
			keep = append(keep, g)
		}
	}
	v.groupsMu.Lock()
	defer v.groupsMu.Unlock()
	if old, ok := v.groups[user]; ok && old.issued.After(issued) && v.now().Before(old.expiresAt) {
		return // an older token presented after a newer one does not bring back what it listed
	}
	if _, ok := v.groups[user]; !ok && len(v.groups) >= maxGroupUsers {
		now := v.now()
		for u, tg := range v.groups {
			if !now.Before(tg.expiresAt) {
				delete(v.groups, u)
			}
		}
		for u := range v.groups {
			if len(v.groups) < maxGroupUsers {
				break
			}
			delete(v.groups, u)
		}
	}
	v.groups[user] = tokenGroups{groups: keep, issued: issued, expiresAt: expires}
}

// groupsOf are the groups of user's newest verified token while it has not expired.
func (v *View) groupsOf(user string) []string {
	v.groupsMu.Lock()
	defer v.groupsMu.Unlock()
	tg, ok := v.groups[user]
	if !ok || !v.now().Before(tg.expiresAt) {
		return nil
	}
	return tg.groups
}

// putAccessKey adds an access key (under v.mu). The hash is the key's lookup: one already held
// by another key (which the control plane's derivation never makes) leaves the first one alone.
func (v *View) putAccessKey(id, org, tunnelID string, selector map[string]string, hash, derivedFrom string, expires time.Time, cidrs []string, revoked bool) error {
	k := &accessKey{id: id, orgID: org, tunnelID: tunnelID, selector: selector, hash: hash, derivedFrom: derivedFrom, expiresAt: expires, revoked: revoked}
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			// Not a key anyone can use: refusing every source is the safe reading.
			k.cidrs = []netip.Prefix{{}}
			return fmt.Errorf("access key %s: cidr %q: %w", id, c, err)
		}
		k.cidrs = append(k.cidrs, p)
	}
	if _, taken := v.keyByHash[hash]; taken {
		return fmt.Errorf("access key %s: its secret hash is another key's", id)
	}
	v.accessKeys[id] = k
	v.keyByHash[hash] = k
	return nil
}

// DrainRequested tells whether the log asks node nodeID to drain.
func (v *View) DrainRequested(nodeID string) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, d := range v.decisions {
		if d.Type == domain.TypeNodeDrainRequested && d.NodeID == nodeID {
			return true
		}
	}
	return false
}

// decide remembers the decision event id records (under v.mu).
func (v *View) decide(id string, e domain.Event) {
	if d, ok := wire.DecisionOf(e); ok {
		v.decisions[id] = d
	}
}

// Decided waits until the view holds the decision recorded as event id (or ctx ends): a command
// derived from it may run. A command whose id names no such event was not sent by the control
// plane.
func (v *View) Decided(ctx context.Context, id string) (Decision, error) {
	for {
		v.mu.RLock()
		d, ok := v.decisions[id]
		ch := v.changed
		v.mu.RUnlock()
		if ok {
			return d, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return Decision{}, fmt.Errorf("the log holds no decision %s (as far as this node has read it): %w", id, ctx.Err())
		}
	}
}

// withdrawsAccess tells the events after which an ingress authorization given earlier may no
// longer hold. (TunnelUpdated cannot change the owner; renames change the route, not access; a
// change of labels does, and apply calls the hook for it.)
func withdrawsAccess(e Event) bool {
	if e.StreamID == ledger.LogStream {
		return e.Type == ledger.TypeKeyRevoked
	}
	switch e.Type {
	case domain.TypeRoleUnassigned, domain.TypeTunnelDeleted, domain.TypeGrantRevoked, domain.TypeGrantExpired, domain.TypeAccessKeyRevoked,
		domain.TypeUserDeleted:
		return true
	}
	return false
}

func (v *View) names(org string) map[string]string {
	m := v.byName[org]
	if m == nil {
		m = map[string]string{}
		v.byName[org] = m
	}
	return m
}

// applyKey tracks token keys. A rotated token key keeps verifying the tokens it signed until they
// expire; a revoked one stops at once.
func (v *View) applyKey(e Event) error {
	switch e.Type {
	case ledger.TypeKeyAdded:
		var p ledger.KeyAddedPayload
		if err := json.Unmarshal(e.Payload, &p); err != nil {
			return err
		}
		if p.Purpose == ledger.PurposeToken {
			v.keys.Put(p.KeyID, ed25519.PublicKey(p.PublicKey))
		}
	case ledger.TypeKeyRotated:
		var p ledger.KeyRotatedPayload
		if err := json.Unmarshal(e.Payload, &p); err != nil {
			return err
		}
		if p.Purpose == ledger.PurposeToken {
			v.keys.Put(p.NewKeyID, ed25519.PublicKey(p.PublicKey))
			at := e.RecordedAt
			if at.IsZero() {
				at = v.now()
			}
			v.rotated[p.OldKeyID] = at
		}
	case ledger.TypeKeyRevoked:
		var p ledger.KeyRevokedPayload
		if err := json.Unmarshal(e.Payload, &p); err != nil {
			return err
		}
		v.keys.Delete(p.KeyID)
	}
	return nil
}

// Keys are the token keys the view trusts.
func (v *View) Keys() *token.KeySet { return v.keys }

func (v *View) verifier() *token.Verifier {
	return &token.Verifier{Keys: v.keys, Issuer: v.issuer, Leeway: v.leeway, Now: v.now}
}

// userKeys are the token keys user tokens may be signed with: a key rotated out more than
// RotatedUserKeyGrace ago no longer counts (user tokens live for hours; a rotation after a leak
// must shut out what the old key signs, as the admin API does).
type userKeys struct{ v *View }

func (u userKeys) PublicKey(kid string) (crypto.PublicKey, bool) {
	u.v.mu.RLock()
	at, rotated := u.v.rotated[kid]
	u.v.mu.RUnlock()
	if rotated && !u.v.now().Before(at.Add(RotatedUserKeyGrace)) {
		return nil, false
	}
	return u.v.keys.PublicKey(kid)
}

// AuthenticateAgent implements node.Authenticator.
func (v *View) AuthenticateAgent(_ context.Context, raw string) (node.AgentIdentity, error) {
	c, err := v.verifier().VerifyAgent(raw)
	if err != nil {
		return node.AgentIdentity{}, fmt.Errorf("%w: %w", node.ErrUnauthenticated, err)
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.revoked[c.ID] {
		return node.AgentIdentity{}, fmt.Errorf("%w: %w: token %s", node.ErrUnauthenticated, node.ErrTokenRevoked, c.ID)
	}
	t := v.tunnels[c.Tunnel]
	if t != nil && t.deleted && t.orgID == c.Org {
		return node.AgentIdentity{}, fmt.Errorf("%w: %w: tunnel %s", node.ErrUnauthenticated, node.ErrTunnelDeleted, c.Tunnel)
	}
	// An unknown tunnel may be one this node has not heard of yet (created a moment ago).
	if t == nil || t.orgID != c.Org {
		return node.AgentIdentity{}, fmt.Errorf("%w: tunnel %s does not exist (as far as this node knows)", node.ErrUnauthenticated, c.Tunnel)
	}
	var exp time.Time
	if c.ExpiresAt != nil {
		exp = c.ExpiresAt.Time
	}
	id := node.AgentIdentity{OrgID: c.Org, TunnelID: c.Tunnel, TokenID: c.ID, ExpiresAt: exp, Upstream: t.upstream}
	if k, ok := v.sealKeys[c.ID]; ok {
		id.Seal = node.SealKey{Subject: k.subject, Generation: k.gen, Public: k.pub}
	}
	return id, nil
}

// Resolve implements node.Router. A ref is a tunnel id, "<name>.<org name>", or a bare name. A
// bare name resolves only among the organizations where the caller holds a role, and only when
// exactly one of them has a tunnel of that name: what another tenant names its tunnels never
// changes where a caller's requests go.
func (v *View) Resolve(ref string, caller node.Principal) (node.Route, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if t := v.tunnels[ref]; t != nil && !t.deleted {
		return t.route(), true
	}
	if name, org, ok := strings.Cut(ref, "."); ok {
		orgID := v.orgByName[org]
		if t := v.tunnels[v.byName[orgID][name]]; t != nil {
			return t.route(), true
		}
		return node.Route{}, false
	}
	if caller.AccessKeyID != "" {
		// An access key's caller holds no role: a bare name is its own tunnel's (for a key scoped
		// by labels, that of its organization's tunnel of that name if it matches), or nothing.
		if k := v.accessKeys[caller.AccessKeyID]; k != nil {
			id := k.tunnelID
			if k.selector != nil {
				id = v.byName[k.orgID][ref]
			}
			if t := v.tunnels[id]; t != nil && !t.deleted && t.name == ref && v.keyCovers(k, t) {
				return t.route(), true
			}
		}
		return node.Route{}, false
	}
	var found node.Route
	n := 0
	for orgID, names := range v.byName {
		if t := v.tunnels[names[ref]]; t != nil && len(v.roles[orgID+"|"+caller.UserID]) > 0 {
			found = t.route()
			n++
		}
	}
	return found, n == 1
}

// AuthenticateCaller implements node.IngressAuthorizer: a user token signed by a token key of the
// log (one rotated out less than RotatedUserKeyGrace ago included), or a tunnel access key the
// log issued (told apart by domain.AccessKeyPrefix; found by the hash of the secret).
func (v *View) AuthenticateCaller(_ context.Context, bearer string) (node.Principal, error) {
	if bearer == "" {
		return node.Principal{}, fmt.Errorf("%w: a bearer token is required", node.ErrUnauthenticated)
	}
	if strings.HasPrefix(bearer, domain.AccessKeyPrefix) {
		v.mu.RLock()
		k := v.keyByHash[domain.HashAccessKey(bearer)]
		var err error
		if k != nil {
			err = v.keyUsable(k)
		}
		v.mu.RUnlock()
		switch {
		case k == nil:
			// Perhaps issued a moment ago and not yet here; the caller's words either way.
			return node.Principal{}, keyRefused(token.ErrInvalid, "unknown access key")
		case err != nil:
			return node.Principal{}, err
		}
		return node.Principal{AccessKeyID: k.id}, nil
	}
	c, err := (&token.Verifier{Keys: userKeys{v}, Issuer: v.issuer, Leeway: v.leeway, Now: v.now}).VerifyUser(bearer)
	if err != nil {
		return node.Principal{}, fmt.Errorf("%w: %w", node.ErrUnauthenticated, err)
	}
	var issued, expires time.Time
	if c.IssuedAt != nil {
		issued = c.IssuedAt.Time
	}
	if c.ExpiresAt != nil {
		expires = c.ExpiresAt.Time
	}
	v.rememberGroups(c.Subject, c.Groups, issued, expires)
	p := node.Principal{UserID: c.Subject, Host: c.Host, IssuedAt: issued}
	if !expires.IsZero() {
		p.Expires = expires.Add(v.leeway)
	}
	return p, nil
}

// keyUsable is nil for an access key that is neither revoked nor expired (under v.mu), else an
// ErrUnauthenticated in the caller's words (token.Reason).
func (v *View) keyUsable(k *accessKey) error {
	if k.revoked {
		return keyRefused(token.ErrInvalid, "the access key was revoked")
	}
	if k.derivedFrom != "" {
		// Whoever holds a token key can derive the secrets of the keys issued under it: a revoked
		// token key takes them along (a rotated one does not).
		if _, ok := v.keys.PublicKey(k.derivedFrom); !ok {
			return keyRefused(token.ErrInvalid, "the token key the access key was derived from was revoked; issue a new one")
		}
	}
	if !v.now().Before(k.expiresAt) {
		return keyRefused(token.ErrExpired, "the access key expired at "+k.expiresAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// keyRefusal is an access key the view refuses: node.ErrUnauthenticated, and its text is the
// reason in the caller's words (token.ErrInvalid or token.ErrExpired and why), which token.Reason
// finds at the top of the chain.
type keyRefusal struct{ reason error }

func keyRefused(kind error, why string) error { return keyRefusal{fmt.Errorf("%w: %s", kind, why)} }

func (e keyRefusal) Error() string        { return e.reason.Error() }
func (e keyRefusal) Unwrap() error        { return e.reason }
func (e keyRefusal) Is(target error) bool { return target == node.ErrUnauthenticated }

// authorizeKey decides a call with an access key (under v.mu), on every request: revoked or
// expired since it was authenticated, 401; another tunnel than its own, unknown (404, as for a
// tunnel that does not exist: a key tells its holder nothing about other tunnels); a source
// outside its prefixes, 403.
func (v *View) authorizeKey(p node.Principal, r node.Route) error {
	k := v.accessKeys[p.AccessKeyID]
	if k == nil {
		return keyRefused(token.ErrInvalid, "unknown access key")
	}
	if err := v.keyUsable(k); err != nil {
		return err
	}
	t := v.tunnels[r.TunnelID]
	if t == nil || t.deleted || !v.keyCovers(k, t) {
		return fmt.Errorf("%w: %s", node.ErrUnknownTunnel, r.Name)
	}
	if !domain.AccessKeyAllows(k.cidrs, p.RemoteIP) {
		return fmt.Errorf("%w: this access key is not accepted from %s", node.ErrForbidden, p.RemoteIP)
	}
	return nil
}

// keyCovers tells whether k may call t (under v.mu): t is its tunnel, or, for a key scoped by
// labels, a tunnel of its organization whose labels match its selector now.
func (v *View) keyCovers(k *accessKey, t *tunnel) bool {
	if k.orgID != t.orgID {
		return false
	}
	if k.selector != nil {
		return k.tunnelID == "" && domain.LabelsMatch(k.selector, t.labels)
	}
	return k.tunnelID == t.id
}

// AuthorizeIngress implements node.IngressAuthorizer by domain.MayUseTunnel, the rule the control
// plane also applies to issuing the tunnel's agent tokens, or by a grant on the tunnel to the
// user or to a group of the user's token (unexpired by the clock, not revoked), or for an access
// key by its own tunnel, expiry and source prefixes (authorizeKey).
// A caller with no role in the tunnel's organization and no grant learns nothing of it
// (ErrUnknownTunnel).
func (v *View) AuthorizeIngress(_ context.Context, p node.Principal, r node.Route) error {
	groups := v.groupsOf(p.UserID)
	v.mu.RLock()
	defer v.mu.RUnlock()
	if p.AccessKeyID != "" {
		return v.authorizeKey(p, r)
	}
	if !p.Expires.IsZero() && !v.now().Before(p.Expires) {
		// Valid when it was authenticated (and cached), no longer: a call it opened ends too.
		return fmt.Errorf("%w: %w", node.ErrUnauthenticated, token.ErrExpired)
	}
	if err := v.issuedBeforeDeletion(p, r.OrgID); err != nil {
		return err
	}
	roles := v.roles[r.OrgID+"|"+p.UserID]
	superadmin := v.roles[domain.PlatformOrg+"|"+p.UserID][domain.RoleSuperadmin]
	t := v.tunnels[r.TunnelID]
	if t == nil || t.deleted {
		return fmt.Errorf("%w: %s", node.ErrUnknownTunnel, r.Name)
	}
	if domain.MayUseTunnel(p.UserID, t.owner, roles, superadmin) || v.granted(t, p.UserID, groups) {
		return nil
	}
	if len(roles) == 0 && !superadmin {
		return fmt.Errorf("%w: %s", node.ErrUnknownTunnel, r.Name)
	}
	return fmt.Errorf("%w: %s may not use tunnel %s", node.ErrForbidden, p.UserID, r.Name)
}

// issuedBeforeDeletion refuses a user token issued at or before the user's latest deletion from
// org or from everywhere (under v.mu): ErrUnauthenticated, so the caller signs in again (a token
// issued after it is decided as any other: by roles and grants). A token without an issue time
// counts as issued before.
func (v *View) issuedBeforeDeletion(p node.Principal, org string) error {
	at, ok := v.deleted[org+"|"+p.UserID]
	if all, ok2 := v.deleted[domain.PlatformOrg+"|"+p.UserID]; ok2 && (!ok || all.After(at)) {
		at, ok = all, true
	}
	if ok && !p.IssuedAt.After(at) {
		return fmt.Errorf("%w: %w: the user was deleted at %s; sign in again", node.ErrUnauthenticated, token.ErrInvalid, at.UTC().Format(time.RFC3339))
	}
	return nil
}

// skippable are the types the view takes withheld: those it does not act on.
func skippable(eventType string) bool { return !domain.NodeNeeds(eventType) }

// NodeKeys are the event keys the log holds in force for nodeID: enrolled and not removed.
// Nodes authenticate each other with them (peer forwarding); none for an unknown or removed
// node, or for a view that takes events unverified (New).
func (v *View) NodeKeys(nodeID string) []ed25519.PublicKey {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.chain == nil {
		return nil
	}
	return v.chain.ProducerKeys(nodeID)
}

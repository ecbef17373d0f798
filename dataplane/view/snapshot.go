package view

import (
	"cmp"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/tunnelplane/tunnelplane/compliance/pii/sealbox"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

// snapshotFormat changes whenever what the view folds, or how a snapshot stores it, changes: a
// snapshot of another format is not used and the node replays the log from its start instead.
const snapshotFormat = 8

// ErrSnapshotMismatch: the snapshot was taken of another log, for another issuer or in another
// format; it must not be used (replay from the start instead).
var ErrSnapshotMismatch = errors.New("view snapshot does not fit")

type snapshot struct {
	Format    int                          `json:"format"`
	Origin    string                       `json:"origin"` // the log's origin
	Issuer    string                       `json:"issuer"`
	Position  int64                        `json:"position"`
	EventID   string                       `json:"event_id"` // the event at Position
	Keys      map[string][]byte            `json:"keys"`     // token key id → Ed25519 public key
	Tunnels   []snapshotTunnel             `json:"tunnels"`
	ByName    map[string]map[string]string `json:"by_name"`
	Orgs      map[string]string            `json:"orgs"`
	OrgByName map[string]string            `json:"org_by_name"`
	Roles     map[string][]domain.Role     `json:"roles"`
	Revoked   []string                     `json:"revoked"`
	// AccessKeys are the tunnel access keys the log issued (hashes of their secrets only).
	AccessKeys []snapshotAccessKey `json:"access_keys,omitempty"`
	// Grants are the grants not ended (format 4).
	Grants    []snapshotGrant      `json:"grants,omitempty"`
	Decisions map[string]Decision  `json:"decisions,omitempty"`
	Rotated   map[string]time.Time `json:"rotated,omitempty"` // token key id → rotated out at
	// Deleted is when users were last deleted, by org|user (format 8).
	Deleted map[string]time.Time `json:"deleted,omitempty"`
	// SealKeys are the agent tokens' issuers' sealing keys (format 6).
	SealKeys []snapshotSealKey `json:"seal_keys,omitempty"`
	// Chain is the record verifier's state at Position (views made by NewVerified).
	Chain json.RawMessage `json:"chain,omitempty"`
}

type snapshotTunnel struct {
	ID       string `json:"id"`
	OrgID    string `json:"org_id"`
	Name     string `json:"name"`
	Owner    string `json:"owner"`
	Upstream string `json:"upstream"`
	Protocol string `json:"protocol"`
	Deleted  bool   `json:"deleted,omitempty"`
	Calls    bool   `json:"calls,omitempty"` // its access log is domain.AccessLogCalls
	// Labels and CORS (format 7).
	Labels map[string]string  `json:"labels,omitempty"`
	CORS   *domain.TunnelCORS `json:"cors,omitempty"`
}

type snapshotSealKey struct {
	TokenID    string    `json:"token_id"`
	Subject    string    `json:"subject"`
	Generation int       `json:"generation"`
	Public     []byte    `json:"public"`
	ExpiresAt  time.Time `json:"expires_at"`
}

type snapshotGrant struct {
	ID          string    `json:"id"`
	OrgID       string    `json:"org_id"`
	TunnelID    string    `json:"tunnel_id"`
	SubjectKind string    `json:"subject_kind"`
	Subject     string    `json:"subject"`
	ExpiresAt   time.Time `json:"expires_at"`
}

type snapshotAccessKey struct {
	ID       string `json:"id"`
	OrgID    string `json:"org_id"`
	TunnelID string `json:"tunnel_id"`
	// Selector of a key scoped by labels (format 7).
	Selector    map[string]string `json:"selector,omitempty"`
	SecretHash  string            `json:"secret_hash"`
	DerivedFrom string            `json:"derived_from,omitempty"`
	ExpiresAt   time.Time         `json:"expires_at"`
	CIDRs       []string          `json:"cidrs,omitempty"`
	Revoked     bool              `json:"revoked,omitempty"`
}

// Snapshot is the view's state as of Position, for the log whose origin is given. Restore
// rebuilds an equal view from it, so that a restarted node replays only what came after.
func (v *View) Snapshot(origin string) ([]byte, int64, error) {
	v.mu.RLock()
	s := snapshot{Format: snapshotFormat, Origin: origin, Issuer: v.issuer, Position: v.position, EventID: v.lastID,
		Keys: map[string][]byte{}, ByName: map[string]map[string]string{}, Orgs: maps.Clone(v.orgs),
		OrgByName: maps.Clone(v.orgByName), Roles: map[string][]domain.Role{}, Revoked: slices.Sorted(maps.Keys(v.revoked)),
		Decisions: maps.Clone(v.decisions), Rotated: maps.Clone(v.rotated), Deleted: maps.Clone(v.deleted)}
	if v.chain != nil {
		chain, err := json.Marshal(v.chain)
		if err != nil {
			v.mu.RUnlock()
			return nil, 0, fmt.Errorf("view snapshot: %w", err)
		}
		s.Chain = chain
	}
	for _, t := range v.tunnels {
		s.Tunnels = append(s.Tunnels, snapshotTunnel{ID: t.id, OrgID: t.orgID, Name: t.name, Owner: t.owner, Upstream: t.upstream, Protocol: t.protocol, Deleted: t.deleted, Calls: t.calls,
			Labels: t.labels, CORS: t.corsOf()})
	}
	for org, names := range v.byName {
		s.ByName[org] = maps.Clone(names)
	}
	for _, k := range v.accessKeys {
		sk := snapshotAccessKey{ID: k.id, OrgID: k.orgID, TunnelID: k.tunnelID, Selector: k.selector, SecretHash: k.hash, DerivedFrom: k.derivedFrom, ExpiresAt: k.expiresAt,
			Revoked: k.revoked}
		for _, p := range k.cidrs {
			sk.CIDRs = append(sk.CIDRs, p.String())
		}
		s.AccessKeys = append(s.AccessKeys, sk)
	}
	for _, g := range v.grantByID {
		s.Grants = append(s.Grants, snapshotGrant{ID: g.id, OrgID: g.orgID, TunnelID: g.tunnelID, SubjectKind: g.kind, Subject: g.subject, ExpiresAt: g.expiresAt})
	}
	for id, k := range v.sealKeys {
		s.SealKeys = append(s.SealKeys, snapshotSealKey{TokenID: id, Subject: k.subject, Generation: k.gen, Public: k.pub, ExpiresAt: k.expires})
	}
	for k, roles := range v.roles {
		if len(roles) > 0 {
			s.Roles[k] = slices.Sorted(maps.Keys(roles))
		}
	}
	keys := v.keys.All() // changed only under v.mu, so as of Position too
	v.mu.RUnlock()
	for id, pub := range keys {
		k, ok := pub.(ed25519.PublicKey)
		if !ok {
			return nil, 0, fmt.Errorf("view snapshot: token key %s is a %T, not Ed25519", id, pub)
		}
		s.Keys[id] = k
	}
	slices.SortFunc(s.Tunnels, func(a, b snapshotTunnel) int { return cmp.Compare(a.ID, b.ID) })
	slices.SortFunc(s.AccessKeys, func(a, b snapshotAccessKey) int { return cmp.Compare(a.ID, b.ID) })
	slices.SortFunc(s.Grants, func(a, b snapshotGrant) int { return cmp.Compare(a.ID, b.ID) })
	slices.SortFunc(s.SealKeys, func(a, b snapshotSealKey) int { return cmp.Compare(a.TokenID, b.TokenID) })
	b, err := json.Marshal(s)
	if err != nil {
		return nil, 0, fmt.Errorf("view snapshot: %w", err)
	}
	return b, s.Position, nil
}

// Restore loads a snapshot into a view that has applied nothing yet. A snapshot of another log
// origin, issuer or format is refused with ErrSnapshotMismatch and leaves the view empty.
func (v *View) Restore(b []byte, origin string) error {
	var s snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("view snapshot: %w", err)
	}
	switch {
	case s.Format != snapshotFormat:
		return fmt.Errorf("%w: format %d, this node reads %d", ErrSnapshotMismatch, s.Format, snapshotFormat)
	case s.Origin != origin:
		return fmt.Errorf("%w: taken of the log %q, the control plane's is %q", ErrSnapshotMismatch, s.Origin, origin)
	case s.Issuer != v.issuer:
		return fmt.Errorf("%w: issuer %q, this node's is %q", ErrSnapshotMismatch, s.Issuer, v.issuer)
	case s.Position < -1:
		return fmt.Errorf("view snapshot: position %d", s.Position)
	}
	for id, k := range s.Keys {
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("view snapshot: token key %s: %d bytes", id, len(k))
		}
	}
	var chain *ledger.ChainVerifier
	if v.chain != nil {
		chain = ledger.NewChainVerifier(origin, v.chain.Genesis(), domain.NodeFactsStream)
		chain.AcceptWithheld(skippable)
		if len(s.Chain) == 0 {
			return fmt.Errorf("%w: it holds no record verifier state", ErrSnapshotMismatch)
		}
		if err := json.Unmarshal(s.Chain, chain); err != nil {
			return fmt.Errorf("view snapshot: %w", err)
		}
		if chain.Origin() != origin || int64(chain.Next()) != s.Position+1 {
			return fmt.Errorf("%w: its record verifier is for %q at %d, the view at %d", ErrSnapshotMismatch, chain.Origin(), chain.Next(), s.Position+1)
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.position != -1 {
		return errors.New("view snapshot: the view has applied events already")
	}
	if chain != nil {
		v.chain = chain
	}
	maps.Copy(v.decisions, s.Decisions)
	maps.Copy(v.rotated, s.Rotated)
	maps.Copy(v.deleted, s.Deleted)
	for id, k := range s.Keys {
		v.keys.Put(id, ed25519.PublicKey(k))
	}
	for _, t := range s.Tunnels {
		tun := &tunnel{id: t.ID, orgID: t.OrgID, name: t.Name, owner: t.Owner, upstream: t.Upstream, protocol: t.Protocol, deleted: t.Deleted, calls: t.Calls,
			labels: t.Labels}
		if t.CORS != nil {
			tun.setCORS(*t.CORS)
		}
		v.tunnels[t.ID] = tun
	}
	for org, names := range s.ByName {
		v.byName[org] = maps.Clone(names)
	}
	maps.Copy(v.orgs, s.Orgs)
	maps.Copy(v.orgByName, s.OrgByName)
	for k, roles := range s.Roles {
		v.roles[k] = map[domain.Role]bool{}
		for _, r := range roles {
			v.roles[k][r] = true
		}
	}
	for _, id := range s.Revoked {
		v.revoked[id] = true
	}
	for _, k := range s.AccessKeys {
		if err := v.putAccessKey(k.ID, k.OrgID, k.TunnelID, k.Selector, k.SecretHash, k.DerivedFrom, k.ExpiresAt, k.CIDRs, k.Revoked); err != nil {
			return fmt.Errorf("view snapshot: %w", err)
		}
	}
	for _, k := range s.SealKeys {
		if len(k.Public) != sealbox.KeySize || k.Generation < 1 {
			return fmt.Errorf("view snapshot: sealing key of token %s: %d bytes, generation %d", k.TokenID, len(k.Public), k.Generation)
		}
		v.sealKeys[k.TokenID] = sealKey{subject: k.Subject, gen: k.Generation, pub: k.Public, expires: k.ExpiresAt}
	}
	v.sealPrune = max(minSealPrune, 2*len(v.sealKeys))
	for _, g := range s.Grants {
		v.putGrant(&grant{id: g.ID, orgID: g.OrgID, tunnelID: g.TunnelID, kind: g.SubjectKind, subject: g.Subject, expiresAt: g.ExpiresAt})
	}
	v.position, v.lastID = s.Position, s.EventID
	v.settleReady()
	close(v.changed)
	v.changed = make(chan struct{})
	return nil
}

// SaveFile writes Snapshot to path atomically (a temporary file, synced, then renamed), so a
// crash leaves the old snapshot or the new one, never a torn one. It returns the position saved.
func (v *View) SaveFile(path, origin string) (int64, error) {
	b, pos, err := v.Snapshot(origin)
	if err != nil {
		return 0, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return 0, fmt.Errorf("view snapshot: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, nothing is there any more
	if _, err = tmp.Write(b); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return 0, fmt.Errorf("view snapshot: %w", err)
	}
	return pos, nil
}

// LoadFile restores the snapshot at path (see Restore). A missing file is fs.ErrNotExist.
func (v *View) LoadFile(path, origin string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return v.Restore(b, origin)
}

package api

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// Activity kinds: what GET /tunnels/{id}/activity?kinds= selects.
const (
	ActivityConfig      = "config"      // the tunnel's creation, changes, deletion; its access policy
	ActivityCredentials = "credentials" // agent tokens and access keys issued and revoked
	ActivityGrants      = "grants"      // grants, access requests and their decisions
	ActivitySessions    = "sessions"    // agents connected, disconnected, replaced; failover and failback
	ActivityUsage       = "usage"       // per-caller usage over the window (the rollups)
)

// activityKinds maps each kind of the log's events to its types.
var activityKinds = map[string][]string{
	ActivityConfig:      {domain.TypeTunnelCreated, domain.TypeTunnelUpdated, domain.TypeTunnelDeleted, domain.TypeAccessPolicySet},
	ActivityCredentials: {domain.TypeAgentTokenIssued, domain.TypeAgentTokenRevoked, domain.TypeAccessKeyIssued, domain.TypeAccessKeyRevoked},
	ActivityGrants: {domain.TypeGrantCreated, domain.TypeGrantRevoked, domain.TypeGrantExpired, domain.TypeAccessRequested, domain.TypeAccessApproved,
		domain.TypeAccessRequestDenied},
	ActivitySessions: {domain.TypeAgentConnected, domain.TypeAgentDisconnected, domain.TypeAgentReplaced, domain.TypeFailoverStarted,
		domain.TypeFailoverCompleted, domain.TypeFailbackCompleted},
}

var activityKindNames = []string{ActivityConfig, ActivityCredentials, ActivityGrants, ActivitySessions, ActivityUsage}

// Bounds of one activity page: the organization's events of the wanted types looked at per
// query and per page (a quiet tunnel in a busy organization gets a page with a cursor, not a
// long scan), the callers a usage summary sums, and its default window.
const (
	activityScanPerQuery = 2000
	activityScanPerPage  = 20000
	activityMaxCallers   = 10000
	activityUsageWindow  = 30 * 24 * time.Hour
)

// ActivityItem is one event about the tunnel.
type ActivityItem struct {
	Position      int64     `json:"position"`
	RecordedAt    time.Time `json:"recorded_at"`
	EventID       string    `json:"event_id"`
	Kind          string    `json:"kind"`
	Type          string    `json:"type"`
	Actor         string    `json:"actor,omitempty"`
	CorrelationID string    `json:"correlation_id,omitempty"`
	CausationID   string    `json:"causation_id,omitempty"`
	RequestID     string    `json:"request_id,omitempty"`
	// Details is the event's payload without the organization, the tunnel and any secret's hash.
	Details map[string]any `json:"details"`
}

// CallerUsage is one caller's traffic through the tunnel over the usage window.
type CallerUsage struct {
	CallerKind string    `json:"caller_kind"`
	CallerID   string    `json:"caller_id,omitempty"`
	Requests   int64     `json:"requests"`
	Errors     int64     `json:"errors"`
	BytesIn    int64     `json:"bytes_in"`
	BytesOut   int64     `json:"bytes_out"`
	StreamsMax int64     `json:"streams_max"`
	StreamedMS int64     `json:"streamed_ms"`
	FirstHour  time.Time `json:"first_hour"`
	LastHour   time.Time `json:"last_hour"`
}

// UsageSummary is per-caller usage of the tunnel in [From, To) (whole UTC hours).
type UsageSummary struct {
	From    time.Time     `json:"from"`
	To      time.Time     `json:"to"`
	Callers []CallerUsage `json:"callers"`
}

// Activity is a page of a tunnel's activity, oldest first, and on the first page its usage.
type Activity struct {
	TunnelID   string         `json:"tunnel_id"`
	Items      []ActivityItem `json:"items"`
	NextCursor string         `json:"next_cursor,omitempty"`
	Usage      *UsageSummary  `json:"usage,omitempty"`
}

func (s *Server) tunnelActivity(c echo.Context) error {
	q, err := newQuery(c, "org", "from", "to", "kinds", "limit", "cursor", "wait_for")
	if err != nil {
		return err
	}
	p, err := q.page("activity")
	if err != nil {
		return err
	}
	from, to, err := q.window("from", "to")
	if err != nil {
		return err
	}
	kinds := activityKindNames
	if v := q.str("kinds"); v != "" {
		kinds = strings.Split(v, ",")
		for _, k := range kinds {
			if _, ok := activityKinds[k]; !ok && k != ActivityUsage {
				return badRequest("kinds", "%q is not a kind: use %s", k, strings.Join(activityKindNames, ", "))
			}
		}
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjTunnels, commands.ActRead, true)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	id := c.Param("id")
	if err := s.waitFor(c, projections.Tunnels); err != nil {
		return err
	}
	if err := s.knownTunnel(ctx, org, id); err != nil {
		return err
	}
	var after, upTo int64
	if p.cursor != nil {
		if after, err = p.cursorInt(0); err != nil {
			return err
		}
		if upTo, err = p.cursorInt(1); err != nil {
			return err
		}
	} else {
		// The first page fixes the last position of every page, so events appended while a
		// client pages never shift a page; the audit index must hold it.
		head, err := s.cfg.Log.Head(ctx)
		if err != nil {
			return err
		}
		if err := s.catchUp(ctx, projections.Audit, projections.Usage); err != nil {
			return err
		}
		if after, upTo, err = s.activityRange(ctx, from, to, head); err != nil {
			return err
		}
	}
	var types []string
	for _, k := range kinds {
		types = append(types, activityKinds[k]...)
	}
	out := Activity{TunnelID: id, Items: []ActivityItem{}}
	if len(types) > 0 && after < upTo {
		if err := s.activityPage(ctx, org, id, types, after, upTo, p, &out); err != nil {
			return err
		}
	}
	if p.cursor == nil && slices.Contains(kinds, ActivityUsage) {
		u, err := s.callerUsage(ctx, org, id, from, to)
		if err != nil {
			return err
		}
		out.Usage = u
	}
	return c.JSON(http.StatusOK, out)
}

// activityRange maps [from, to) onto positions: after (excluded) and upTo (included).
func (s *Server) activityRange(ctx context.Context, from, to *time.Time, head uint64) (after, upTo int64, err error) {
	after, upTo = -1, int64(head)-1
	if from != nil {
		pos, ok, err := s.cfg.Log.PositionAt(ctx, from.Add(-time.Nanosecond))
		if err != nil {
			return 0, 0, err
		}
		if ok {
			after = int64(pos)
		}
	}
	if to != nil {
		pos, ok, err := s.cfg.Log.PositionAt(ctx, to.Add(-time.Nanosecond))
		if err != nil {
			return 0, 0, err
		}
		upTo = -1
		if ok {
			upTo = min(int64(pos), int64(head)-1)
		}
	}
	return after, upTo, nil
}

func (s *Server) activityPage(ctx context.Context, org, id string, types []string, after, upTo int64, p page, out *Activity) error {
	kindOf := map[string]string{}
	for k, ts := range activityKinds {
		for _, t := range ts {
			kindOf[t] = k
		}
	}
	reader := s.cfg.ReadModels
	for scanned := 0; ; scanned += activityScanPerQuery {
		rows, last, err := reader.TunnelActivity(ctx, readmodels.ActivityFilter{OrgID: org, TunnelID: id, Types: types, After: after, UpTo: upTo,
			Scan: activityScanPerQuery, Limit: p.limit - len(out.Items)})
		if err != nil {
			return err
		}
		for _, r := range rows {
			out.Items = append(out.Items, activityItem(r, kindOf[r.Type]))
		}
		if last < 0 || last >= upTo {
			return nil // the range is read to its end
		}
		after = last
		if len(out.Items) == p.limit || scanned+activityScanPerQuery >= activityScanPerPage {
			out.NextCursor = encodeCursor(p.kind, after, upTo)
			return nil
		}
	}
}

func activityItem(r readmodels.ActivityEvent, kind string) ActivityItem {
	it := ActivityItem{Position: r.Position, RecordedAt: r.RecordedAt.UTC(), EventID: r.EventID, Kind: kind, Type: r.Type, Details: map[string]any{}}
	for dst, src := range map[*string]*string{&it.Actor: r.Actor, &it.CorrelationID: r.CorrelationID, &it.CausationID: r.CausationID, &it.RequestID: r.RequestID} {
		if src != nil {
			*dst = *src
		}
	}
	_ = json.Unmarshal(r.Payload, &it.Details) // the log's own JSON copy; a failure leaves no details
	for _, k := range []string{"org_id", "tunnel_id", "secret_hash"} {
		delete(it.Details, k)
	}
	return it
}

// callerUsage sums the tunnel's per-caller hourly rollups over [from, to) (default: the 30 days
// before to, and now).
func (s *Server) callerUsage(ctx context.Context, org, id string, from, to *time.Time) (*UsageSummary, error) {
	end := s.cfg.Now().UTC()
	if to != nil {
		end = to.UTC()
	}
	end = end.Add(time.Hour - time.Nanosecond).Truncate(time.Hour)
	start := end.Add(-activityUsageWindow)
	if from != nil {
		start = from.UTC().Truncate(time.Hour)
	}
	u := &UsageSummary{From: start, To: end, Callers: []CallerUsage{}}
	if !start.Before(end) {
		return u, nil
	}
	sums := map[readmodels.UsageKey]*CallerUsage{}
	var after *readmodels.UsageKey
	for {
		rows, next, err := s.cfg.ReadModels.UsageHours(ctx, readmodels.UsageFilter{OrgID: org, Scope: readmodels.UsageScopeCaller, TunnelID: id,
			From: start, To: end, After: after, Limit: MaxLimit})
		if err != nil {
			return nil, err
		}
		for _, h := range rows {
			c := sums[h.UsageKey]
			if c == nil {
				c = &CallerUsage{CallerKind: h.CallerKind, CallerID: h.CallerID, FirstHour: h.Hour}
				sums[h.UsageKey] = c
			}
			c.Requests += h.Requests
			c.Errors += h.Errors
			c.BytesIn += h.BytesIn
			c.BytesOut += h.BytesOut
			c.StreamedMS += h.StreamedMS
			c.StreamsMax = max(c.StreamsMax, h.StreamsMax)
			c.LastHour = h.Hour
		}
		if next == nil || len(sums) >= activityMaxCallers {
			break
		}
		after = next
	}
	for _, c := range sums {
		u.Callers = append(u.Callers, *c)
	}
	sort.Slice(u.Callers, func(i, j int) bool {
		a, b := u.Callers[i], u.Callers[j]
		if a.Requests != b.Requests {
			return a.Requests > b.Requests
		}
		if a.CallerKind != b.CallerKind {
			return a.CallerKind < b.CallerKind
		}
		return a.CallerID < b.CallerID
	})
	return u, nil
}

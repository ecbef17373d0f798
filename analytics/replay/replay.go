package replay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// Metric is what a series counts per hour.
type Metric string

// Metrics of a series.
const (
	Requests Metric = "requests" // calls
	Bytes    Metric = "bytes"    // bytes in and out
	Streams  Metric = "streams"  // mean calls open (streamed time over the hour)
)

// MaxHistory bounds the hours a series may span (five years), so a request cannot make the
// fold allocate without bound.
const MaxHistory = 5 * 8766

// Errors of Hourly.
var (
	ErrInvalid = errors.New("invalid replay request")
	ErrNoData  = errors.New("no usage in the log for this scope")
)

// Request names the series to rebuild.
type Request struct {
	OrgID    string // required
	TunnelID string // empty: the whole organization
	Metric   Metric
	// AsOf: only what the log held at this time counts (the last position recorded at or before
	// it), and the series ends with the last whole hour before it. Zero: now.
	AsOf time.Time
	// History is how far back the series reaches from AsOf (default 90 days, at most MaxHistory
	// hours).
	History time.Duration
	// UpTo, when set, is the last log position read instead of the one recorded at AsOf: what a
	// recorded forecast names, so that replaying it reads exactly what it read.
	UpTo *uint64
}

// Series is an hourly series: Values[i] is the hour starting at Start + i hours (UTC). Hours
// without windows are zero.
type Series struct {
	Start    time.Time
	Values   []float64
	Position uint64 // the last log position the replay read up to (inclusive)
	Windows  int    // usage windows folded in
	Skipped  int    // windows that did not validate (a hostile or broken node), left out
}

// Hourly rebuilds the series by reading the log's usage windows. A window counts in the hour its
// start falls in; windows are 10 s long by default, so at most one window per node straddles an
// hour boundary.
func Hourly(ctx context.Context, st *eventstore.Store, req Request, now time.Time) (Series, error) {
	if req.OrgID == "" {
		return Series{}, fmt.Errorf("%w: an organization is required", ErrInvalid)
	}
	switch req.Metric {
	case Requests, Bytes, Streams:
	default:
		return Series{}, fmt.Errorf("%w: metric %q (requests, bytes or streams)", ErrInvalid, req.Metric)
	}
	asOf := req.AsOf
	if asOf.IsZero() {
		asOf = now
	}
	if asOf.After(now) {
		return Series{}, fmt.Errorf("%w: as-of %s is in the future", ErrInvalid, asOf.UTC().Format(time.RFC3339))
	}
	history := req.History
	if history == 0 {
		history = 90 * 24 * time.Hour
	}
	if history < time.Hour || history > MaxHistory*time.Hour {
		return Series{}, fmt.Errorf("%w: history must be between 1h and %dh", ErrInvalid, MaxHistory)
	}
	end := asOf.UTC().Truncate(time.Hour) // exclusive: the hour in progress at as-of is not whole
	start := end.Add(-history).Truncate(time.Hour)
	hours := int(end.Sub(start) / time.Hour)
	upTo, ok, err := st.PositionAt(ctx, asOf)
	if err != nil {
		return Series{}, err
	}
	if req.UpTo != nil {
		if !ok || *req.UpTo > upTo {
			return Series{}, fmt.Errorf("%w: position %d was not recorded by %s", ErrInvalid, *req.UpTo, asOf.UTC().Format(time.RFC3339))
		}
		upTo = *req.UpTo
	} else if !ok {
		return Series{}, fmt.Errorf("%w: the log holds nothing recorded before %s", ErrNoData, asOf.UTC().Format(time.RFC3339))
	}
	s := Series{Start: start, Values: make([]float64, hours), Position: upTo}
	const page = 5000
	for from := uint64(0); ; {
		recs, err := st.ReadType(ctx, domain.TypeUsageRecorded, from, upTo, page)
		if err != nil {
			return Series{}, err
		}
		for i := range recs {
			s.fold(&recs[i], req)
		}
		if len(recs) < page {
			break
		}
		from = recs[len(recs)-1].Position + 1
	}
	if s.Windows == 0 {
		return s, fmt.Errorf("%w (as of position %d)", ErrNoData, upTo)
	}
	return s, nil
}

func (s *Series) fold(rec *eventstore.Record, req Request) {
	ev, err := domain.Decode(rec.Type, rec.Payload)
	if err != nil {
		s.Skipped++
		return
	}
	u := ev.(*domain.UsageRecorded)
	if u.OrgID != req.OrgID || (req.TunnelID != "" && u.TunnelID != req.TunnelID) {
		return
	}
	if err := u.Validate(); err != nil {
		s.Skipped++
		return
	}
	i := int(u.WindowStart.UTC().Truncate(time.Hour).Sub(s.Start) / time.Hour)
	if u.WindowStart.Before(s.Start) || i >= len(s.Values) {
		return
	}
	s.Windows++
	switch req.Metric {
	case Requests:
		s.Values[i] += float64(u.Requests)
	case Bytes:
		s.Values[i] += float64(u.BytesIn) + float64(u.BytesOut)
	case Streams:
		s.Values[i] += float64(u.StreamedMS) / float64(time.Hour/time.Millisecond)
	}
}

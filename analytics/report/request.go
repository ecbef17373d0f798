package report

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tunnelplane/tunnelplane/analytics/rollup"
	"github.com/tunnelplane/tunnelplane/domain"
)

// ErrRequest: a report request that cannot be served as asked (kind, window, org, format).
var ErrRequest = errors.New("invalid analytics report request")

// ErrUnknownKind: not one of the analytics reports.
var ErrUnknownKind = errors.New("unknown analytics report")

// ErrNotReady: the usage read model has not applied the log yet.
var ErrNotReady = errors.New("the usage read model is not ready")

// The reports, by the names report.generated, the API and the CLI use.
const (
	KindUsage      = "usage"
	KindChargeback = "chargeback"
	KindCapacity   = "capacity"
)

// Kinds lists the analytics reports.
func Kinds() []string { return []string{KindUsage, KindChargeback, KindCapacity} }

// IsKind reports whether name is an analytics report.
func IsKind(name string) bool { return slices.Contains(Kinds(), name) }

// MaxWindow is the longest window a report covers (as the analytics API's ranges).
const MaxWindow = 366 * 24 * time.Hour

// Request is one report to build.
type Request struct {
	// Kind is KindUsage, KindChargeback or KindCapacity.
	Kind string
	// From and To bound the window [From, To); the report widens it to whole buckets (usage),
	// local days (chargeback) or hours (capacity) in the organization's time zone.
	From, To time.Time
	// Month, for a chargeback report instead of From and To, is a local month "YYYY-MM".
	Month string
	// OrgID is the organization (its id; required).
	OrgID string
	// Actor is who asked (named in the report and in report.generated).
	Actor string
	// ReportID, when set, is the report's id (a scheduled run passes one derived from the run, so
	// the report stream's NoStream expectation refuses a second run); else a fresh UUIDv7.
	ReportID string
}

// Validate checks the request's own fields, joining every problem.
func (r Request) Validate() error {
	var errs []error
	if !IsKind(r.Kind) {
		errs = append(errs, fmt.Errorf("%w: %q (want usage, chargeback or capacity)", ErrUnknownKind, truncate(r.Kind, 32)))
	}
	if !domain.ValidID(r.OrgID) {
		errs = append(errs, fmt.Errorf("%w: an organization id is required", ErrRequest))
	}
	switch {
	case r.Month != "" && r.Kind != KindChargeback:
		errs = append(errs, fmt.Errorf("%w: month is for chargeback reports", ErrRequest))
	case r.Month != "" && (!r.From.IsZero() || !r.To.IsZero()):
		errs = append(errs, fmt.Errorf("%w: month or from and to, not both", ErrRequest))
	case r.Month != "":
		if t, err := time.Parse("2006-01", r.Month); err != nil || t.Year() < 2000 || t.Year() > 9998 {
			errs = append(errs, fmt.Errorf("%w: month must be like 2026-03", ErrRequest))
		}
	case r.From.IsZero() || r.To.IsZero():
		errs = append(errs, fmt.Errorf("%w: from and to are required", ErrRequest))
	case !r.From.Before(r.To):
		errs = append(errs, fmt.Errorf("%w: from must be before to", ErrRequest))
	case r.To.Sub(r.From) > MaxWindow:
		errs = append(errs, fmt.Errorf("%w: a window of at most %d days", ErrRequest, int(MaxWindow.Hours()/24)))
	case r.From.Year() < 2000 || r.To.Year() > 9998:
		errs = append(errs, fmt.Errorf("%w: a window within the years 2000..9998", ErrRequest))
	}
	return errors.Join(errs...)
}

// Granularity is the bucket a usage report's timeline uses for a window: hours up to two days,
// days up to two months, ISO weeks up to half a year, months beyond.
func Granularity(from, to time.Time) rollup.Granularity {
	switch d := to.Sub(from); {
	case d <= 48*time.Hour:
		return rollup.Hour
	case d <= 62*24*time.Hour:
		return rollup.Day
	case d <= 183*24*time.Hour:
		return rollup.Week
	}
	return rollup.Month
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

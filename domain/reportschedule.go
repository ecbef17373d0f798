package domain

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"time"
)

// ReportKindForecast is the schedule kind that forecasts usage and warns of a capacity crossing
// (capacity.forecast_exceeded); every other kind renders a report. Which kinds exist is the
// control plane's to say (its generators); the domain checks only their syntax.
const ReportKindForecast = "forecast"

// OrgReportKinds are the report kinds that are always of one organization (its usage read
// model): a schedule of them needs an org.
var OrgReportKinds = []string{"usage", "chargeback", "capacity"}

// Cadences of a schedule.
const (
	CadenceDaily    = "daily"    // every day at Hour (local)
	CadenceWeekly   = "weekly"   // every Weekday at Hour (local)
	CadenceMonthly  = "monthly"  // every month on Day at Hour (local)
	CadenceInterval = "interval" // every IntervalHours hours, at multiples of it since 1970-01-01T00:00Z
)

// MaxIntervalHours bounds an interval cadence (31 days).
const MaxIntervalHours = 744

// reportFormats are the formats report/render writes.
var reportFormats = []string{"html", "pdf", "xlsx", "csv", "json"}

// Cadence is when a schedule's runs are due, in the schedule's time zone.
type Cadence struct {
	Every string `json:"every"`
	// Hour is the local hour (0–23) of daily, weekly and monthly runs.
	Hour int `json:"hour"`
	// Weekday of weekly runs: "monday" … "sunday".
	Weekday string `json:"weekday,omitempty"`
	// Day of the month (1–28, so that every month has it) of monthly runs.
	Day int `json:"day,omitempty"`
	// IntervalHours of interval runs (1–744).
	IntervalHours int `json:"interval_hours,omitempty"`
}

// ForecastSpec is what a forecast schedule forecasts and when it warns: the series of a tunnel
// (or the whole organization), and the threshold per hour with the probability of exceeding it.
type ForecastSpec struct {
	TunnelID     string  `json:"tunnel_id,omitempty"`
	Metric       string  `json:"metric"` // requests, bytes, streams
	Threshold    float64 `json:"threshold"`
	Probability  float64 `json:"probability"`   // in (0, 1]
	HorizonHours int     `json:"horizon_hours"` // 1–8760
}

// ReportScheduleSpec is what a schedule makes and when.
type ReportScheduleSpec struct {
	Kind   string `json:"kind"`
	Format string `json:"format"`
	// TimeZone is an IANA zone name ("" is UTC): daily, weekly and monthly runs and the periods
	// they cover are its local ones.
	TimeZone string        `json:"time_zone,omitempty"`
	Cadence  Cadence       `json:"cadence"`
	Forecast *ForecastSpec `json:"forecast,omitempty"`
}

// ReportScheduleCreated starts a schedule. OrgID empty: the whole log (superadmins). Since is
// when it starts: its first run is the first due time after it.
type ReportScheduleCreated struct {
	ScheduleID string    `json:"schedule_id"`
	OrgID      string    `json:"org_id,omitempty"`
	CreatedBy  string    `json:"created_by"`
	Since      time.Time `json:"since"`
	ReportScheduleSpec
}

// ReportScheduleUpdated replaces a schedule's spec (its kind stays) from Since on.
type ReportScheduleUpdated struct {
	ScheduleID string    `json:"schedule_id"`
	OrgID      string    `json:"org_id,omitempty"`
	Since      time.Time `json:"since"`
	ReportScheduleSpec
}

// ReportSchedulePaused stops a schedule's runs; runs due while it is paused are not made.
type ReportSchedulePaused struct {
	ScheduleID string `json:"schedule_id"`
	OrgID      string `json:"org_id,omitempty"`
}

// ReportScheduleResumed runs a paused schedule again from Since on.
type ReportScheduleResumed struct {
	ScheduleID string    `json:"schedule_id"`
	OrgID      string    `json:"org_id,omitempty"`
	Since      time.Time `json:"since"`
}

// ReportScheduleDeleted ends a schedule for good.
type ReportScheduleDeleted struct {
	ScheduleID string `json:"schedule_id"`
	OrgID      string `json:"org_id,omitempty"`
}

// CapacityForecastExceeded records that a scheduled forecast expects the series to cross its
// threshold, with everything needed to make the forecast again by replay: the log position it
// read up to (as of AsOf), the history it read, the horizon, the model and its parameters.
type CapacityForecastExceeded struct {
	ScheduleID string `json:"schedule_id"`
	OrgID      string `json:"org_id"`
	TunnelID   string `json:"tunnel_id,omitempty"`
	// DueAt is the run's due time; AsOf the time the replay read the log as of (the same).
	DueAt    time.Time `json:"due_at"`
	AsOf     time.Time `json:"as_of"`
	Position uint64    `json:"position"`
	// HistoryHours the replay read back from AsOf; the series forecast starts at SeriesStart
	// (its first hour with usage) and is SeriesHours long.
	HistoryHours int             `json:"history_hours"`
	SeriesStart  time.Time       `json:"series_start"`
	SeriesHours  int             `json:"series_hours"`
	HorizonHours int             `json:"horizon_hours"`
	Model        string          `json:"model"`
	Params       []ForecastParam `json:"params"`
	Metric       string          `json:"metric"`
	Threshold    float64         `json:"threshold"`
	// MinProbability is the schedule's; Probability that of the first hour reaching it, Hour.
	MinProbability float64   `json:"min_probability"`
	Hour           time.Time `json:"hour"`
	Probability    float64   `json:"probability"`
	// ReportID is the run's forecast report (report.generated).
	ReportID string `json:"report_id"`
}

// ForecastParam is a fitted model parameter.
type ForecastParam struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
}

func (ReportScheduleCreated) EventType() string    { return TypeReportScheduleCreated }
func (ReportScheduleUpdated) EventType() string    { return TypeReportScheduleUpdated }
func (ReportSchedulePaused) EventType() string     { return TypeReportSchedulePaused }
func (ReportScheduleResumed) EventType() string    { return TypeReportScheduleResumed }
func (ReportScheduleDeleted) EventType() string    { return TypeReportScheduleDeleted }
func (CapacityForecastExceeded) EventType() string { return TypeCapacityForecastExceeded }

// ReportScheduleStream is a schedule's stream.
func ReportScheduleStream(scheduleID string) string { return "reportschedule-" + scheduleID }

// CapacityStream is the stream of one capacity warning.
func CapacityStream(eventID string) string { return "capacity-" + eventID }

// ReportSchedule is a report schedule.
type ReportSchedule struct {
	id, orgID, createdBy string
	spec                 ReportScheduleSpec
	since                time.Time
	paused, deleted      bool
	version              uint64
}

// NewReportSchedule is the input of CreateReportSchedule.
type NewReportSchedule struct {
	ScheduleID, OrgID, CreatedBy string
	Now                          time.Time
	Spec                         ReportScheduleSpec
}

// CreateReportSchedule decides a new schedule.
func CreateReportSchedule(in NewReportSchedule) (ReportScheduleCreated, error) {
	var p problems
	checkID(&p, "schedule_id", in.ScheduleID)
	if in.OrgID != "" {
		checkID(&p, "org_id", in.OrgID)
	}
	if in.CreatedBy == "" {
		p.add("created_by", "is required")
	}
	checkScheduleSpec(&p, in.OrgID, in.Spec)
	if err := p.err(); err != nil {
		return ReportScheduleCreated{}, err
	}
	return ReportScheduleCreated{ScheduleID: in.ScheduleID, OrgID: in.OrgID, CreatedBy: in.CreatedBy, Since: in.Now.UTC(), ReportScheduleSpec: in.Spec}, nil
}

// RehydrateReportSchedule rebuilds a schedule from its stream.
func RehydrateReportSchedule(events []Recorded) (*ReportSchedule, error) {
	if len(events) == 0 {
		return nil, ErrNotFound
	}
	s := &ReportSchedule{}
	for _, r := range events {
		e, err := Decode(r.Type, r.Payload)
		if err != nil {
			return nil, err
		}
		if err := s.Apply(e, r.StreamVersion); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Apply folds one of the schedule's events in (the schedule's process manager follows the log
// with it).
func (s *ReportSchedule) Apply(e Event, version uint64) error {
	switch ev := e.(type) {
	case *ReportScheduleCreated:
		s.id, s.orgID, s.createdBy, s.spec, s.since = ev.ScheduleID, ev.OrgID, ev.CreatedBy, ev.ReportScheduleSpec, ev.Since
	case *ReportScheduleUpdated:
		s.spec, s.since = ev.ReportScheduleSpec, ev.Since
	case *ReportSchedulePaused:
		s.paused = true
	case *ReportScheduleResumed:
		s.paused, s.since = false, ev.Since
	case *ReportScheduleDeleted:
		s.deleted = true
	default:
		return fmt.Errorf("report schedule: %w: %s", ErrUnknownEvent, e.EventType())
	}
	s.version = version
	return nil
}

// Update decides a new spec from now on; the kind cannot change (who may read a report depends
// on it). Nil: nothing changed.
func (s *ReportSchedule) Update(spec ReportScheduleSpec, now time.Time) (*ReportScheduleUpdated, error) {
	if s.deleted {
		return nil, fmt.Errorf("update report schedule %s: %w", s.id, ErrNotFound)
	}
	var p problems
	if spec.Kind != s.spec.Kind {
		p.add("kind", "cannot change (it is %q): delete the schedule and create another", s.spec.Kind)
	}
	checkScheduleSpec(&p, s.orgID, spec)
	if err := p.err(); err != nil {
		return nil, err
	}
	if reflect.DeepEqual(spec, s.spec) {
		return nil, nil
	}
	return &ReportScheduleUpdated{ScheduleID: s.id, OrgID: s.orgID, Since: now.UTC(), ReportScheduleSpec: spec}, nil
}

// Pause decides pausing; nil when already paused.
func (s *ReportSchedule) Pause() (*ReportSchedulePaused, error) {
	if s.deleted {
		return nil, fmt.Errorf("pause report schedule %s: %w", s.id, ErrNotFound)
	}
	if s.paused {
		return nil, nil
	}
	return &ReportSchedulePaused{ScheduleID: s.id, OrgID: s.orgID}, nil
}

// Resume decides resuming from now on; nil when not paused.
func (s *ReportSchedule) Resume(now time.Time) (*ReportScheduleResumed, error) {
	if s.deleted {
		return nil, fmt.Errorf("resume report schedule %s: %w", s.id, ErrNotFound)
	}
	if !s.paused {
		return nil, nil
	}
	return &ReportScheduleResumed{ScheduleID: s.id, OrgID: s.orgID, Since: now.UTC()}, nil
}

// Delete decides ending the schedule.
func (s *ReportSchedule) Delete() (ReportScheduleDeleted, error) {
	if s.deleted {
		return ReportScheduleDeleted{}, fmt.Errorf("delete report schedule %s: %w", s.id, ErrNotFound)
	}
	return ReportScheduleDeleted{ScheduleID: s.id, OrgID: s.orgID}, nil
}

// NextDue is the first run due after both lastDue (the newest run made; zero if none) and the
// time the schedule last started (created, updated or resumed). Zero when paused or deleted.
func (s *ReportSchedule) NextDue(lastDue time.Time) time.Time {
	if s.paused || s.deleted {
		return time.Time{}
	}
	after := s.since
	if lastDue.After(after) {
		after = lastDue
	}
	loc, err := LoadTimeZone(s.spec.TimeZone)
	if err != nil {
		return time.Time{} // validated when decided; a zone database without it runs nothing
	}
	return s.spec.Cadence.Next(after, loc)
}

func (s *ReportSchedule) ID() string               { return s.id }
func (s *ReportSchedule) OrgID() string            { return s.orgID }
func (s *ReportSchedule) CreatedBy() string        { return s.createdBy }
func (s *ReportSchedule) Spec() ReportScheduleSpec { return s.spec }
func (s *ReportSchedule) Since() time.Time         { return s.since }
func (s *ReportSchedule) Paused() bool             { return s.paused }
func (s *ReportSchedule) Deleted() bool            { return s.deleted }
func (s *ReportSchedule) Version() uint64          { return s.version }

var weekdays = []string{"sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"}

// Next is the first due time strictly after t. A local hour that a DST change skips runs at the
// instant time.Date normalizes it to (an hour later); one it repeats runs once, at the first.
func (c Cadence) Next(t time.Time, loc *time.Location) time.Time {
	if c.Every == CadenceInterval {
		step := int64(c.IntervalHours) * 3600
		if step <= 0 {
			return time.Time{}
		}
		u := t.Unix()
		n := u/step + 1
		if u < 0 && u%step != 0 {
			n = u / step
		}
		return time.Unix(n*step, 0).UTC()
	}
	lt := t.In(loc)
	y, m, d := lt.Date()
	for i := 0; i < 400; i++ { // a daily cadence finds it in 2, weekly in 8, monthly in 62 days
		day := time.Date(y, m, d+i, 0, 0, 0, 0, loc)
		match := false
		switch c.Every {
		case CadenceDaily:
			match = true
		case CadenceWeekly:
			match = weekdays[day.Weekday()] == c.Weekday
		case CadenceMonthly:
			match = day.Day() == c.Day
		}
		if !match {
			continue
		}
		due := time.Date(day.Year(), day.Month(), day.Day(), c.Hour, 0, 0, 0, loc)
		if due.After(t) {
			return due.UTC()
		}
	}
	return time.Time{}
}

// Window is the period a run due at due covers: the previous local day, ISO week (from Monday)
// or month before the due time's own, or the interval that ends at it.
func (c Cadence) Window(due time.Time, loc *time.Location) (from, to time.Time) {
	if c.Every == CadenceInterval {
		return due.Add(-time.Duration(c.IntervalHours) * time.Hour).UTC(), due.UTC()
	}
	lt := due.In(loc)
	y, m, d := lt.Date()
	switch c.Every {
	case CadenceWeekly:
		back := (int(lt.Weekday()) + 6) % 7 // days since Monday
		to = time.Date(y, m, d-back, 0, 0, 0, 0, loc)
		from = time.Date(y, m, d-back-7, 0, 0, 0, 0, loc)
	case CadenceMonthly:
		to = time.Date(y, m, 1, 0, 0, 0, 0, loc)
		from = time.Date(y, m-1, 1, 0, 0, 0, 0, loc)
	default:
		to = time.Date(y, m, d, 0, 0, 0, 0, loc)
		from = time.Date(y, m, d-1, 0, 0, 0, 0, loc)
	}
	return from.UTC(), to.UTC()
}

func checkCadence(p *problems, c Cadence) {
	switch c.Every {
	case CadenceDaily, CadenceWeekly, CadenceMonthly:
		if c.Hour < 0 || c.Hour > 23 {
			p.add("cadence.hour", "must be a local hour from 0 to 23")
		}
		if c.IntervalHours != 0 {
			p.add("cadence.interval_hours", "is for the interval cadence")
		}
	case CadenceInterval:
		if c.IntervalHours < 1 || c.IntervalHours > MaxIntervalHours {
			p.add("cadence.interval_hours", "must be from 1 to %d", MaxIntervalHours)
		}
		if c.Hour != 0 {
			p.add("cadence.hour", "is for daily, weekly and monthly cadences")
		}
	default:
		p.add("cadence.every", "must be daily, weekly, monthly or interval")
	}
	if c.Every == CadenceWeekly {
		if !slices.Contains(weekdays, c.Weekday) {
			p.add("cadence.weekday", "must be a weekday: monday … sunday")
		}
	} else if c.Weekday != "" {
		p.add("cadence.weekday", "is for the weekly cadence")
	}
	if c.Every == CadenceMonthly {
		if c.Day < 1 || c.Day > 28 {
			p.add("cadence.day", "must be a day of the month from 1 to 28 (every month has it)")
		}
	} else if c.Day != 0 {
		p.add("cadence.day", "is for the monthly cadence")
	}
}

func checkScheduleSpec(p *problems, orgID string, s ReportScheduleSpec) {
	if len(s.Kind) > 32 || !ValidName(s.Kind) {
		p.add("kind", "must be a report kind, like soc2")
	}
	if !slices.Contains(reportFormats, s.Format) {
		p.add("format", "must be one of %s", strings.Join(reportFormats, ", "))
	}
	if _, err := LoadTimeZone(s.TimeZone); err != nil {
		p.add("time_zone", "must be an IANA time zone name such as Europe/Berlin")
	}
	checkCadence(p, s.Cadence)
	if orgID == "" && slices.Contains(OrgReportKinds, s.Kind) {
		p.add("org", "a %s report is of an organization", s.Kind)
	}
	if s.Kind != ReportKindForecast {
		if s.Forecast != nil {
			p.add("forecast", "is for the forecast kind")
		}
		return
	}
	if s.Format != "json" {
		p.add("format", "a forecast is written as json")
	}
	f := s.Forecast
	if f == nil {
		p.add("forecast", "is required for the forecast kind: the metric, threshold and probability")
		return
	}
	if orgID == "" {
		p.add("org", "a forecast is of an organization or one of its tunnels")
	}
	if f.TunnelID != "" {
		checkID(p, "forecast.tunnel_id", f.TunnelID)
	}
	switch f.Metric {
	case "requests", "bytes", "streams":
	default:
		p.add("forecast.metric", "must be requests, bytes or streams")
	}
	if math.IsNaN(f.Threshold) || math.IsInf(f.Threshold, 0) || f.Threshold <= 0 {
		p.add("forecast.threshold", "must be a positive number per hour")
	}
	if math.IsNaN(f.Probability) || f.Probability <= 0 || f.Probability > 1 {
		p.add("forecast.probability", "must be in (0, 1]")
	}
	if f.HorizonHours < 1 || f.HorizonHours > 8760 {
		p.add("forecast.horizon_hours", "must be from 1 to 8760")
	}
}

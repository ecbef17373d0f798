package domain_test

import (
	"errors"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
)

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// Due times and the periods runs cover, across a DST change and month ends.
func TestCadenceNextAndWindow(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name          string
		cadence       domain.Cadence
		zone          string
		after         string
		due, from, to string
	}{
		{"daily over the spring DST change", domain.Cadence{Every: "daily", Hour: 6}, "Europe/Berlin", "2026-03-28T05:00:00Z",
			"2026-03-29T04:00:00Z", "2026-03-27T23:00:00Z", "2026-03-28T23:00:00Z"},
		{"daily at an hour the change skips", domain.Cadence{Every: "daily", Hour: 2}, "Europe/Berlin", "2026-03-28T12:00:00Z",
			"2026-03-29T01:00:00Z", "2026-03-27T23:00:00Z", "2026-03-28T23:00:00Z"},
		{"daily, exactly at a due time: the next", domain.Cadence{Every: "daily", Hour: 6}, "", "2026-12-02T06:00:00Z",
			"2026-12-03T06:00:00Z", "2026-12-02T00:00:00Z", "2026-12-03T00:00:00Z"},
		{"weekly", domain.Cadence{Every: "weekly", Hour: 6, Weekday: "monday"}, "", "2026-12-02T10:00:00Z",
			"2026-12-07T06:00:00Z", "2026-11-30T00:00:00Z", "2026-12-07T00:00:00Z"},
		{"monthly over a year end", domain.Cadence{Every: "monthly", Day: 1}, "", "2026-12-01T00:00:00Z",
			"2027-01-01T00:00:00Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{"monthly in a zone", domain.Cadence{Every: "monthly", Day: 3, Hour: 7}, "America/New_York", "2026-11-20T00:00:00Z",
			"2026-12-03T12:00:00Z", "2026-11-01T04:00:00Z", "2026-12-01T05:00:00Z"},
		{"interval", domain.Cadence{Every: "interval", IntervalHours: 6}, "Europe/Berlin", "2026-12-02T05:59:00Z",
			"2026-12-02T06:00:00Z", "2026-12-02T00:00:00Z", "2026-12-02T06:00:00Z"},
		{"interval, exactly at a due time", domain.Cadence{Every: "interval", IntervalHours: 6}, "", "2026-12-02T06:00:00Z",
			"2026-12-02T12:00:00Z", "2026-12-02T06:00:00Z", "2026-12-02T12:00:00Z"},
	} {
		t.Run(c.name, func(t *testing.T) {
			loc, err := domain.LoadTimeZone(c.zone)
			if err != nil {
				t.Fatal(err)
			}
			due := c.cadence.Next(utc(c.after), loc)
			if !due.Equal(utc(c.due)) {
				t.Fatalf("next after %s: %s, want %s", c.after, due.Format(time.RFC3339), c.due)
			}
			from, to := c.cadence.Window(due, loc)
			if !from.Equal(utc(c.from)) || !to.Equal(utc(c.to)) {
				t.Fatalf("window of %s: %s..%s, want %s..%s", c.due, from.Format(time.RFC3339), to.Format(time.RFC3339), c.from, c.to)
			}
		})
	}
}

func TestReportScheduleSpecValidation(t *testing.T) {
	t.Parallel()
	id, org := "0190a6c4-0000-7000-8000-000000000001", "0190a6c4-0000-7000-8000-000000000002"
	ok := domain.ReportScheduleSpec{Kind: "soc2", Format: "pdf", Cadence: domain.Cadence{Every: "daily", Hour: 6}}
	forecast := &domain.ForecastSpec{Metric: "requests", Threshold: 100, Probability: 0.8, HorizonHours: 168}
	for _, c := range []struct {
		name  string
		org   string
		spec  domain.ReportScheduleSpec
		field string // "" valid
	}{
		{"daily", org, ok, ""},
		{"the whole log", "", ok, ""},
		{"no kind", org, domain.ReportScheduleSpec{Format: "pdf", Cadence: ok.Cadence}, "kind"},
		{"docx", org, domain.ReportScheduleSpec{Kind: "soc2", Format: "docx", Cadence: ok.Cadence}, "format"},
		{"hour 24", org, domain.ReportScheduleSpec{Kind: "soc2", Format: "pdf", Cadence: domain.Cadence{Every: "daily", Hour: 24}}, "cadence.hour"},
		{"weekly without a day", org, domain.ReportScheduleSpec{Kind: "soc2", Format: "pdf", Cadence: domain.Cadence{Every: "weekly"}}, "cadence.weekday"},
		{"the 29th", org, domain.ReportScheduleSpec{Kind: "soc2", Format: "pdf", Cadence: domain.Cadence{Every: "monthly", Day: 29}}, "cadence.day"},
		{"interval 0", org, domain.ReportScheduleSpec{Kind: "soc2", Format: "pdf", Cadence: domain.Cadence{Every: "interval"}}, "cadence.interval_hours"},
		{"hourly", org, domain.ReportScheduleSpec{Kind: "soc2", Format: "pdf", Cadence: domain.Cadence{Every: "hourly"}}, "cadence.every"},
		{"a zone that is none", org, domain.ReportScheduleSpec{Kind: "soc2", Format: "pdf", TimeZone: "Mars/Olympus", Cadence: ok.Cadence}, "time_zone"},
		{"forecast", org, domain.ReportScheduleSpec{Kind: "forecast", Format: "json", Cadence: ok.Cadence, Forecast: forecast}, ""},
		{"forecast as pdf", org, domain.ReportScheduleSpec{Kind: "forecast", Format: "pdf", Cadence: ok.Cadence, Forecast: forecast}, "format"},
		{"forecast without its spec", org, domain.ReportScheduleSpec{Kind: "forecast", Format: "json", Cadence: ok.Cadence}, "forecast"},
		{"forecast of the whole log", "", domain.ReportScheduleSpec{Kind: "forecast", Format: "json", Cadence: ok.Cadence, Forecast: forecast}, "org"},
		{"a forecast spec on soc2", org, domain.ReportScheduleSpec{Kind: "soc2", Format: "pdf", Cadence: ok.Cadence, Forecast: forecast}, "forecast"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := domain.CreateReportSchedule(domain.NewReportSchedule{ScheduleID: id, OrgID: c.org, CreatedBy: "alice", Now: time.Now(), Spec: c.spec})
			if c.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ve *domain.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("want a validation error on %s, got %v", c.field, err)
			}
			for _, f := range ve.Fields {
				if f.Field == c.field {
					return
				}
			}
			t.Fatalf("want a problem with %s, got %v", c.field, err)
		})
	}
}

// Paused, no run is due; resumed, the first due after the resume; deleted, none.
func TestReportScheduleNextDue(t *testing.T) {
	t.Parallel()
	created, err := domain.CreateReportSchedule(domain.NewReportSchedule{ScheduleID: "0190a6c4-0000-7000-8000-000000000001", CreatedBy: "alice",
		Now: utc("2026-12-02T05:30:00Z"), Spec: domain.ReportScheduleSpec{Kind: "soc2", Format: "pdf", Cadence: domain.Cadence{Every: "daily", Hour: 6}}})
	if err != nil {
		t.Fatal(err)
	}
	s := &domain.ReportSchedule{}
	if err := s.Apply(&created, 1); err != nil {
		t.Fatal(err)
	}
	if got := s.NextDue(time.Time{}); !got.Equal(utc("2026-12-02T06:00:00Z")) {
		t.Fatalf("first due %s", got)
	}
	if got := s.NextDue(utc("2026-12-02T06:00:00Z")); !got.Equal(utc("2026-12-03T06:00:00Z")) {
		t.Fatalf("after the first run %s", got)
	}
	p, _ := s.Pause()
	if err := s.Apply(p, 2); err != nil || !s.NextDue(time.Time{}).IsZero() {
		t.Fatalf("paused: %v %s", err, s.NextDue(time.Time{}))
	}
	r, _ := s.Resume(utc("2026-12-05T07:00:00Z"))
	if err := s.Apply(r, 3); err != nil {
		t.Fatal(err)
	}
	if got := s.NextDue(utc("2026-12-02T06:00:00Z")); !got.Equal(utc("2026-12-06T06:00:00Z")) {
		t.Fatalf("resumed: %s, want the first due after the resume", got)
	}
	d, _ := s.Delete()
	if err := s.Apply(&d, 4); err != nil || !s.NextDue(time.Time{}).IsZero() {
		t.Fatalf("deleted: %v", err)
	}
	if _, err := s.Delete(); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("deleted twice: %v", err)
	}
}

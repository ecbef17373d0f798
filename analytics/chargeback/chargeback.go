// Package chargeback prices an organization's month of usage with the price sheets the log holds:
// exact rational arithmetic (math/big), one rounding per line, half-even to the currency's minor
// unit. It reads nothing itself: the API hands it the sheets and the usage summed by the read
// model, and it owns no state.
package chargeback

import (
	"fmt"
	"math/big"
	"sort"
	"strings"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// Rounding is the rule every statement states.
const Rounding = "each line's exact amount (the sum of its periods at full precision) is rounded once, half to even, to the currency's " +
	"minor unit (ISO 4217; 2 decimals unless the currency has 0 or 3); a total is the sum of its rounded lines. GB = 10^9 bytes; a streamed " +
	"hour = 3,600,000 ms of calls open; an active tunnel-day = a local day in which a tunnel served a request, priced by the sheet in force " +
	"at its first such hour; an hour is priced by the sheet in force at its start."

// Items of a statement line.
const (
	ItemTraffic    = "traffic"
	ItemTunnelDays = "active_tunnel_days"
)

// Statement is the chargeback of one organization for one local month.
type Statement struct {
	OrgID    string    `json:"org_id"`
	Month    string    `json:"month"` // YYYY-MM
	TimeZone string    `json:"time_zone"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	Rounding string    `json:"rounding"`
	Sheets   []Sheet   `json:"price_sheets"` // the sheets in force during the month
	Lines    []Line    `json:"lines"`
	Totals   []Total   `json:"totals"`
}

// Sheet is a price sheet's span within the month.
type Sheet struct {
	From            time.Time `json:"from"`
	To              time.Time `json:"to"`
	Currency        string    `json:"currency"`
	PerGBIn         string    `json:"per_gb_in"`
	PerGBOut        string    `json:"per_gb_out"`
	Per1kRequests   string    `json:"per_1k_requests"`
	PerStreamedHour string    `json:"per_streamed_hour"`
	PerTunnelDay    string    `json:"per_tunnel_day"`
}

// Line is one tunnel and caller's charge for one item in one currency ("" for usage no sheet
// priced: its amount is 0).
type Line struct {
	TunnelID   string   `json:"tunnel_id"`
	CallerKind string   `json:"caller_kind,omitempty"`
	CallerID   string   `json:"caller_id,omitempty"`
	Item       string   `json:"item"`
	Currency   string   `json:"currency"`
	Periods    []Period `json:"periods"`
	Amount     string   `json:"amount"`

	exact *big.Rat
}

// Period is a line's usage under one sheet. Counts are decimal strings (they may pass 2^53).
type Period struct {
	From       time.Time `json:"from"`
	To         time.Time `json:"to"`
	Priced     bool      `json:"priced"`
	Requests   string    `json:"requests,omitempty"`
	BytesIn    string    `json:"bytes_in,omitempty"`
	BytesOut   string    `json:"bytes_out,omitempty"`
	StreamedMS string    `json:"streamed_ms,omitempty"`
	TunnelDays int       `json:"tunnel_days,omitempty"`
	// Exact is the period's amount as an exact fraction ("p/q"), before any rounding.
	Exact string `json:"exact"`
}

// Total is the sum of a currency's rounded lines.
type Total struct {
	Currency string `json:"currency"`
	Amount   string `json:"amount"`
}

// Input is what a statement is computed from.
type Input struct {
	OrgID    string
	TimeZone string
	From, To time.Time // the local month
	// Sheets are the org's sheets starting before To, oldest first; Usage and Days were summed
	// with Boundaries(Sheets) and DayStarts.
	Sheets []readmodels.PriceSheet
	Usage  []readmodels.ChargeUsage
	Days   []readmodels.ActiveTunnelDay
}

// MonthRange is the local month "YYYY-MM" in loc.
func MonthRange(month string, loc *time.Location) (from, to time.Time, err error) {
	t, err := time.Parse("2006-01", month)
	if err != nil || t.Year() < 2000 || t.Year() > 9998 {
		return time.Time{}, time.Time{}, fmt.Errorf("chargeback: month %q: %w", month, domain.ErrInvalidFact)
	}
	from = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, loc)
	return from, time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, loc), nil
}

// Boundaries are the sheets' starts: an hour's period is the number of them at or before it.
func Boundaries(sheets []readmodels.PriceSheet) []time.Time {
	out := make([]time.Time, len(sheets))
	for i, s := range sheets {
		out[i] = s.EffectiveFrom
	}
	return out
}

// DayStarts are the local midnights of [from, to).
func DayStarts(from, to time.Time, loc *time.Location) []time.Time {
	var out []time.Time
	for d := from; d.Before(to); {
		out = append(out, d)
		y, m, day := d.In(loc).Date()
		d = time.Date(y, m, day+1, 0, 0, 0, 0, loc)
	}
	return out
}

var (
	gb      = big.NewRat(1_000_000_000, 1)
	thou    = big.NewRat(1000, 1)
	hourMS  = big.NewRat(3_600_000, 1)
	zeroRat = new(big.Rat)
)

// Compute prices the month.
func Compute(in Input) Statement {
	st := Statement{OrgID: in.OrgID, Month: in.From.Format("2006-01"), TimeZone: in.TimeZone, From: in.From, To: in.To, Rounding: Rounding,
		Lines: []Line{}, Totals: []Total{}, Sheets: []Sheet{}}
	span := func(p int) (time.Time, time.Time) {
		from, to := in.From, in.To
		if p > 0 && in.Sheets[p-1].EffectiveFrom.After(from) {
			from = in.Sheets[p-1].EffectiveFrom
		}
		if p < len(in.Sheets) && in.Sheets[p].EffectiveFrom.Before(to) {
			to = in.Sheets[p].EffectiveFrom
		}
		return from, to
	}
	for p := 1; p <= len(in.Sheets); p++ {
		from, to := span(p)
		if !from.Before(to) {
			continue
		}
		s := in.Sheets[p-1]
		st.Sheets = append(st.Sheets, Sheet{From: from, To: to, Currency: s.Currency, PerGBIn: dec(s.PerGBIn), PerGBOut: dec(s.PerGBOut),
			Per1kRequests: dec(s.Per1kRequests), PerStreamedHour: dec(s.PerStreamedHour), PerTunnelDay: dec(s.PerTunnelDay)})
	}
	type lineKey struct{ tunnel, kind, caller, item, currency string }
	lines := map[lineKey]*Line{}
	var order []lineKey
	line := func(k lineKey) *Line {
		if l := lines[k]; l != nil {
			return l
		}
		lines[k] = &Line{TunnelID: k.tunnel, CallerKind: k.kind, CallerID: k.caller, Item: k.item, Currency: k.currency, exact: new(big.Rat)}
		order = append(order, k)
		return lines[k]
	}
	sheet := func(p int) (readmodels.PriceSheet, bool) {
		if p < 1 || p > len(in.Sheets) {
			return readmodels.PriceSheet{}, false
		}
		return in.Sheets[p-1], true
	}
	for _, u := range in.Usage {
		s, priced := sheet(u.Period)
		from, to := span(u.Period)
		amount := new(big.Rat)
		if priced {
			amount.Add(amount, mulDiv(u.BytesIn, s.PerGBIn, gb))
			amount.Add(amount, mulDiv(u.BytesOut, s.PerGBOut, gb))
			amount.Add(amount, mulDiv(u.Requests, s.Per1kRequests, thou))
			amount.Add(amount, mulDiv(u.StreamedMS, s.PerStreamedHour, hourMS))
		}
		l := line(lineKey{u.TunnelID, u.CallerKind, u.CallerID, ItemTraffic, s.Currency})
		l.exact.Add(l.exact, amount)
		l.Periods = append(l.Periods, Period{From: from, To: to, Priced: priced, Requests: u.Requests.String(), BytesIn: u.BytesIn.String(),
			BytesOut: u.BytesOut.String(), StreamedMS: u.StreamedMS.String(), Exact: amount.String()})
	}
	// Active tunnel-days, by tunnel and the period of each day's first active hour.
	type dayKey struct {
		tunnel string
		period int
	}
	dayCount := map[dayKey]int{}
	var dayOrder []dayKey
	for _, d := range in.Days {
		k := dayKey{d.TunnelID, periodOf(in.Sheets, d.FirstHour)}
		if dayCount[k] == 0 {
			dayOrder = append(dayOrder, k)
		}
		dayCount[k]++
	}
	for _, k := range dayOrder {
		s, priced := sheet(k.period)
		from, to := span(k.period)
		amount := new(big.Rat)
		if priced {
			amount.Mul(big.NewRat(int64(dayCount[k]), 1), s.PerTunnelDay)
		}
		l := line(lineKey{k.tunnel, "", "", ItemTunnelDays, s.Currency})
		l.exact.Add(l.exact, amount)
		l.Periods = append(l.Periods, Period{From: from, To: to, Priced: priced, TunnelDays: dayCount[k], Exact: amount.String()})
	}
	sort.Slice(order, func(i, j int) bool {
		a, b := order[i], order[j]
		return a.tunnel+"\x00"+a.item+"\x00"+a.kind+"\x00"+a.caller+"\x00"+a.currency < b.tunnel+"\x00"+b.item+"\x00"+b.kind+"\x00"+b.caller+"\x00"+b.currency
	})
	totals := map[string]*big.Rat{}
	var currencies []string
	for _, k := range order {
		l := lines[k]
		rounded := RoundHalfEven(l.exact, domain.CurrencyMinorUnit(l.Currency))
		l.Amount = rounded.FloatString(domain.CurrencyMinorUnit(l.Currency))
		st.Lines = append(st.Lines, *l)
		if l.Currency == "" {
			continue
		}
		if totals[l.Currency] == nil {
			totals[l.Currency] = new(big.Rat)
			currencies = append(currencies, l.Currency)
		}
		totals[l.Currency].Add(totals[l.Currency], rounded)
	}
	sort.Strings(currencies)
	for _, c := range currencies {
		st.Totals = append(st.Totals, Total{Currency: c, Amount: totals[c].FloatString(domain.CurrencyMinorUnit(c))})
	}
	return st
}

func periodOf(sheets []readmodels.PriceSheet, t time.Time) int {
	n := 0
	for _, s := range sheets {
		if !s.EffectiveFrom.After(t) {
			n++
		}
	}
	return n
}

func mulDiv(n *big.Int, price, per *big.Rat) *big.Rat {
	if n == nil || n.Sign() == 0 || price.Cmp(zeroRat) == 0 {
		return new(big.Rat)
	}
	r := new(big.Rat).SetInt(n)
	r.Mul(r, price)
	return r.Quo(r, per)
}

// RoundHalfEven rounds r (≥ 0 or not) to decimals places, ties to the even neighbour.
func RoundHalfEven(r *big.Rat, decimals int) *big.Rat {
	scale := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(decimals)), nil)
	x := new(big.Rat).Mul(r, new(big.Rat).SetInt(scale))
	num, den := x.Num(), x.Denom()
	q, m := new(big.Int).QuoRem(num, den, new(big.Int)) // truncated toward zero
	twice := new(big.Int).Abs(m)
	twice.Lsh(twice, 1)
	if c := twice.Cmp(den); c > 0 || (c == 0 && q.Bit(0) == 1) {
		if num.Sign() < 0 {
			q.Sub(q, big.NewInt(1))
		} else {
			q.Add(q, big.NewInt(1))
		}
	}
	return new(big.Rat).SetFrac(q, scale)
}

// dec prints a price as the decimal it was set as (prices have at most 9 decimals).
func dec(r *big.Rat) string {
	s := r.FloatString(9)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

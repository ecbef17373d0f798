package domain

import (
	"regexp"
	"time"
)

// OrgSettingsStream holds an organization's settings (its time zone), apart from its creation
// stream so that changing a setting never races with anything else about the org.
func OrgSettingsStream(orgID string) string { return "orgsettings-" + orgID }

// PriceSheetStream holds the chargeback price sheets of one organization, oldest first.
func PriceSheetStream(orgID string) string { return "pricesheet-" + orgID }

// OrgSettingsUpdated sets an organization's settings. TimeZone is an IANA zone name: days,
// ISO weeks and months of its usage and chargeback are its local ones.
type OrgSettingsUpdated struct {
	OrgID    string `json:"org_id"`
	TimeZone string `json:"time_zone"`
}

// UpdateOrgSettings decides a settings change.
func UpdateOrgSettings(orgID, timeZone string) (OrgSettingsUpdated, error) {
	var p problems
	checkID(&p, "org_id", orgID)
	if _, err := LoadTimeZone(timeZone); err != nil {
		p.add("time_zone", "must be an IANA time zone name such as Europe/Berlin")
	}
	if err := p.err(); err != nil {
		return OrgSettingsUpdated{}, err
	}
	return OrgSettingsUpdated{OrgID: orgID, TimeZone: timeZone}, nil
}

// LoadTimeZone loads an IANA zone by name; "" is UTC. Names are bounded and plain so that a
// hostile value never reaches the file system beyond the zone database.
func LoadTimeZone(name string) (*time.Location, error) {
	if name == "" {
		return time.UTC, nil
	}
	if len(name) > 64 || !zonePattern.MatchString(name) {
		return nil, ErrInvalidFact
	}
	return time.LoadLocation(name)
}

var zonePattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$`)

// PriceSheetSet is a chargeback price sheet of an organization, in force from EffectiveFrom
// (a whole UTC hour, never before the command that set it: history keeps its prices) until the
// next sheet. Prices are decimal strings in Currency: per GB (10^9 bytes) received from callers
// (in) and sent to them (out), per 1,000 requests, per streamed hour (an hour a call was open)
// and per active tunnel-day (a local day a tunnel served a request).
type PriceSheetSet struct {
	OrgID           string    `json:"org_id"`
	EffectiveFrom   time.Time `json:"effective_from"`
	Currency        string    `json:"currency"`
	PerGBIn         string    `json:"per_gb_in"`
	PerGBOut        string    `json:"per_gb_out"`
	Per1kRequests   string    `json:"per_1k_requests"`
	PerStreamedHour string    `json:"per_streamed_hour"`
	PerTunnelDay    string    `json:"per_tunnel_day"`
}

var (
	pricePattern    = regexp.MustCompile(`^[0-9]{1,12}(\.[0-9]{1,9})?$`)
	currencyPattern = regexp.MustCompile(`^[A-Z]{3}$`)
)

// SetPriceSheet decides a price sheet; now is the command's time.
func SetPriceSheet(s PriceSheetSet, now time.Time) (PriceSheetSet, error) {
	var p problems
	checkID(&p, "org_id", s.OrgID)
	if !currencyPattern.MatchString(s.Currency) {
		p.add("currency", "must be an ISO 4217 code such as EUR")
	}
	for field, v := range map[string]string{"per_gb_in": s.PerGBIn, "per_gb_out": s.PerGBOut, "per_1k_requests": s.Per1kRequests,
		"per_streamed_hour": s.PerStreamedHour, "per_tunnel_day": s.PerTunnelDay} {
		if !pricePattern.MatchString(v) {
			p.add(field, "must be a decimal such as 0.05 (up to 12 digits before the point and 9 after)")
		}
	}
	s.EffectiveFrom = s.EffectiveFrom.UTC()
	switch {
	case s.EffectiveFrom.IsZero():
		p.add("effective_from", "is required")
	case !s.EffectiveFrom.Equal(s.EffectiveFrom.Truncate(time.Hour)):
		p.add("effective_from", "must be a whole hour (usage is priced by the hour)")
	case s.EffectiveFrom.Before(now):
		p.add("effective_from", "must not be in the past: a price sheet never rewrites what was charged")
	case s.EffectiveFrom.Year() > 9999:
		p.add("effective_from", "is too far in the future")
	}
	if err := p.err(); err != nil {
		return PriceSheetSet{}, err
	}
	return s, nil
}

// CurrencyMinorUnit is the number of decimals of a currency's minor unit (ISO 4217): 2 unless
// the currency is listed with 0 or 3.
func CurrencyMinorUnit(code string) int {
	switch code {
	case "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF":
		return 0
	case "BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND":
		return 3
	}
	return 2
}

func (OrgSettingsUpdated) EventType() string { return TypeOrgSettingsUpdated }
func (PriceSheetSet) EventType() string      { return TypePriceSheetSet }

package chargeback

import (
	"math/big"
	"testing"
	"time"
)

func TestRoundHalfEvenToTheMinorUnit(t *testing.T) {
	for _, tc := range []struct {
		in       string
		decimals int
		want     string
	}{
		{"0.125", 2, "0.12"}, {"0.135", 2, "0.14"}, {"0.1251", 2, "0.13"}, {"2.5", 0, "2"}, {"3.5", 0, "4"},
		{"1/3", 2, "0.33"}, {"2/3", 3, "0.667"}, {"-0.125", 2, "-0.12"}, {"-0.135", 2, "-0.14"}, {"7.0005", 3, "7.000"},
	} {
		r, ok := new(big.Rat).SetString(tc.in)
		if !ok {
			t.Fatal(tc.in)
		}
		if got := RoundHalfEven(r, tc.decimals).FloatString(tc.decimals); got != tc.want {
			t.Errorf("%s to %d: %s, want %s", tc.in, tc.decimals, got, tc.want)
		}
	}
}

func TestMonthsAndDaysAreLocal(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	from, to, err := MonthRange("2026-03", ny)
	if err != nil || from.UTC().Hour() != 5 || to.UTC().Hour() != 4 {
		t.Fatalf("%s..%s %v", from.UTC(), to.UTC(), err)
	}
	days := DayStarts(from, to, ny)
	if len(days) != 31 || days[8].Sub(days[7]) != 23*time.Hour { // 8 March 2026: DST starts
		t.Fatalf("%d days; 8 March lasts %s", len(days), days[8].Sub(days[7]))
	}
	for _, bad := range []string{"2026-13", "March", "1999-12", ""} {
		if _, _, err := MonthRange(bad, ny); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// Package forecast forecasts hourly usage series (requests, bytes, streams of a tunnel or an
// organization) and says how much to trust the forecast.
//
// It owns the series type, the candidate models (seasonal naive daily and weekly, a seasonal
// median, robust Holt and damped Holt on the deseasonalized log series, a trend + hour-of-day
// + day-of-week regression, the mean of the last three), level-shift pre-adjustment, the choice among them by rolling-origin backtesting scored by MASE
// against the weekly seasonal naive, prediction intervals from the backtest's errors, the
// capacity question ("when does it exceed N, with what probability"), and the synthetic series
// its tests and `tunnelplane bench analytics` use.
//
// It is pure computation: no I/O, no clock, no goroutines of its own, no randomness outside
// the seeded synthetic generator, so the same series gives the same forecast bit for bit (on
// one architecture), which is what lets a replay of the log up to an as-of time reproduce a
// forecast made then. It must not read the log, the rollups or anything else: building the
// series from usage events is the caller's job. docs/forecasting.md explains the numbers.
package forecast

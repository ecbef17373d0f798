// Package replay rebuilds hourly usage series from the log itself: it reads the usage.recorded
// windows (upcast to the current schema) up to a position, or up to the last position recorded
// at a time, and sums them by hour. Forecasts are made from these series, not from the rollup
// read models, so a forecast can be made again exactly as it was at any earlier time ("what
// would we have forecast on March 1").
//
// It owns only that fold. It reads the store and writes nothing.
package replay

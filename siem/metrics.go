package siem

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are every sink's metrics, by sink_id; one set per process, shared by its forwarders.
type Metrics struct {
	delivered  *prometheus.CounterVec
	failures   *prometheus.CounterVec
	lagEvents  *prometheus.GaugeVec
	lagSeconds *prometheus.GaugeVec
	refused    *prometheus.GaugeVec
}

// NewMetrics registers the sinks' metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tunnelplane_siem_delivered_total",
			Help: "Messages a SIEM sink's receiver acknowledged."}, []string{"sink_id"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tunnelplane_siem_delivery_failures_total",
			Help: "Failed deliveries (each retried), by kind: refused (the receiver refused the batch for good) or failed."}, []string{"sink_id", "kind"}),
		lagEvents: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tunnelplane_siem_lag_events",
			Help: "Records of the log a sink has not delivered yet."}, []string{"sink_id"}),
		lagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tunnelplane_siem_lag_seconds",
			Help: "Age of the oldest record a sink has not delivered yet (0 when caught up)."}, []string{"sink_id"}),
		refused: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tunnelplane_siem_refused",
			Help: "1 while a sink's receiver refuses its current batch for good: alert on it."}, []string{"sink_id"}),
	}
	for _, c := range []prometheus.Collector{m.delivered, m.failures, m.lagEvents, m.lagSeconds, m.refused} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// failed counts a failed delivery of sink.
func (m *Metrics) failed(sink string, err error) {
	if m == nil {
		return
	}
	kind, refused := "failed", 0.0
	if errors.Is(err, ErrRefused) {
		kind, refused = "refused", 1
	}
	// As Status().Refused: a receiver that went down since is not known to refuse.
	m.refused.WithLabelValues(sink).Set(refused)
	m.failures.WithLabelValues(sink, kind).Inc()
}

// Forget drops a sink's series (a removed sink: its alerts end with it).
func (m *Metrics) Forget(sink string) {
	if m == nil {
		return
	}
	for _, v := range []*prometheus.GaugeVec{m.lagEvents, m.lagSeconds, m.refused} {
		v.DeleteLabelValues(sink)
	}
	m.delivered.DeleteLabelValues(sink)
	m.failures.DeletePartialMatch(prometheus.Labels{"sink_id": sink})
}

// progress records a delivery of n messages, and the lag behind the log.
func (m *Metrics) progress(sink string, n int) {
	if m == nil {
		return
	}
	m.delivered.WithLabelValues(sink).Add(float64(n))
	m.refused.WithLabelValues(sink).Set(0)
}

func (m *Metrics) lag(sink string, events uint64, seconds float64) {
	if m == nil {
		return
	}
	m.lagEvents.WithLabelValues(sink).Set(float64(events))
	m.lagSeconds.WithLabelValues(sink).Set(seconds)
}

// Package promdeploy holds no code. It is the Prometheus alerting rules of a tunnelplane
// deployment (siem-alerts.yml; see README.md), and its tests show that the rules fire when they
// should and stay quiet when they should (promtool test rules on siem-alerts_test.yml), and that
// every metric and label they name is one the product exports.
//
// It must not change the product: the metrics come from the product's own siem.NewMetrics,
// observed through a real siem.Forwarder.
package promdeploy

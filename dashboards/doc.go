// Package dashboards builds sentinel's Grafana dashboards.
//
// The dashboards are Go values (dashboards.go holds the small typed model,
// fleet.go, agent.go and self.go one dashboard each), rendered to the JSON
// files next to this package by `make generate`. The JSON files are what
// users import into Grafana or provision; they are committed, and a test
// fails when they drift from the Go source. Every panel queries the data
// source chosen in the dashboard's ${datasource} variable.
//
// The tests check the layout and that every metric a panel reads is one
// sentinel exposes (README.md, Metrics) or a recording rule of
// alerts/sentinel.rules.yml; e2e/dashboards_test.go runs every panel's query
// against a real Prometheus scraping the real sentinel.
package dashboards

//go:generate go run ./gen

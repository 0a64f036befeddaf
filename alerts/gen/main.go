// Command gen writes the prometheus-operator PrometheusRule manifest
// generated from sentinel's rule file. `make generate` runs it from the
// alerts directory (go:generate in alerts/doc.go), hence the default paths.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/agentsentinel/sentinel/alerts"
)

func main() {
	rules := flag.String("rules", "sentinel.rules.yml", "Prometheus rule file to read.")
	out := flag.String("out", "../deploy/kubernetes/prometheusrule.yaml", "PrometheusRule manifest to write.")
	flag.Parse()
	if err := run(*rules, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(rulesPath, outPath string) error {
	rules, err := os.ReadFile(rulesPath)
	if err != nil {
		return err
	}
	manifest, err := alerts.PrometheusRule(rules)
	if err != nil {
		return fmt.Errorf("%s: %w", rulesPath, err)
	}
	return os.WriteFile(outPath, manifest, 0o644)
}

// Command gen writes the generated files of the sentinel Helm chart (see
// package helm). `make generate` runs it from the deploy directory
// (go:generate in deploy/doc.go), hence the default paths.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/agentsentinel/sentinel/deploy/helm"
)

func main() {
	rules := flag.String("rules", "../alerts/sentinel.rules.yml", "Prometheus rule file to read.")
	chart := flag.String("chart", "helm/sentinel", "Directory of the chart to write into.")
	flag.Parse()
	if err := run(*rules, *chart); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(rulesPath, chartDir string) error {
	rules, err := os.ReadFile(rulesPath)
	if err != nil {
		return err
	}
	files, err := helm.Generated(rules)
	if err != nil {
		return fmt.Errorf("%s: %w", rulesPath, err)
	}
	// A dashboard that no longer exists must not linger in the chart.
	stale, err := filepath.Glob(filepath.Join(chartDir, helm.DashboardsDir, "*.json"))
	if err != nil {
		return err
	}
	for _, f := range stale {
		if err := os.Remove(f); err != nil {
			return err
		}
	}
	for name, content := range files {
		p := filepath.Join(chartDir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, content, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return nil
}

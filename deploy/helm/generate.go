// Package helm generates the files of the sentinel Helm chart (deploy/helm/sentinel)
// that are copies of the repository's sources: the alerting rules of
// alerts/sentinel.rules.yml, which templates/prometheusrule.yaml puts in a
// PrometheusRule, and the Grafana dashboards of package dashboards, which
// templates/dashboards.yaml puts in ConfigMaps. Helm reads only files
// inside the chart, hence the copies; `make generate` writes them (gen/),
// and deploy's tests fail when they drift from their sources.
package helm

import (
	"fmt"
	"path"

	"github.com/agentsentinel/sentinel/dashboards"
)

// ChartDir is the chart's directory relative to the repository's root.
const ChartDir = "deploy/helm/sentinel"

// Paths of the generated files, relative to the chart's directory.
const (
	RulesFile     = "files/sentinel.rules.yml"
	DashboardsDir = "files/dashboards"
)

const rulesHeader = "# Code generated from alerts/sentinel.rules.yml by deploy/helm/gen. DO NOT EDIT.\n" +
	"# Edit the rule file and run `make generate`.\n"

// Generated returns the chart's generated files, by path relative to the
// chart's directory, given the contents of alerts/sentinel.rules.yml. The
// rule file is copied as is (comments included: Helm indents it under the
// PrometheusRule's spec without reading it); each dashboard is the JSON its
// Go source renders, byte for byte the file in dashboards/.
func Generated(rules []byte) (map[string][]byte, error) {
	if len(rules) == 0 {
		return nil, fmt.Errorf("generate %s: empty rule file", RulesFile)
	}
	files := map[string][]byte{RulesFile: append([]byte(rulesHeader), rules...)}
	for _, d := range dashboards.All() {
		b, err := d.JSON()
		if err != nil {
			return nil, err
		}
		files[path.Join(DashboardsDir, d.FileName())] = b
	}
	return files, nil
}

package alerts

import (
	"bytes"
	"errors"
	"fmt"

	"go.yaml.in/yaml/v3"
)

// PrometheusRuleName is the metadata.name of the generated PrometheusRule.
const PrometheusRuleName = "sentinel-rules"

// generatedHeader opens the manifest; Kubernetes tooling ignores it, readers
// learn where the rules really live.
const generatedHeader = "# Code generated from alerts/sentinel.rules.yml by alerts/gen. DO NOT EDIT.\n" +
	"# Edit the rule file and run `make generate`.\n"

// PrometheusRule renders rules, the contents of a Prometheus rule file, as a
// prometheus-operator PrometheusRule manifest named PrometheusRuleName whose
// spec.groups are the file's groups, verbatim but for comments. The output is
// deterministic, so a committed manifest can be checked against its source.
func PrometheusRule(rules []byte) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(rules, &doc); err != nil {
		return nil, fmt.Errorf("parse rule file: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("parse rule file: not a YAML mapping")
	}
	groups := mappingValue(doc.Content[0], "groups")
	if groups == nil || groups.Kind != yaml.SequenceNode || len(groups.Content) == 0 {
		return nil, errors.New("parse rule file: groups must be a non-empty list")
	}
	// The rule file's comments explain it to its readers; in the manifest they
	// would only drift from it, and the header says where to find them.
	stripComments(groups)

	manifest := mapping(
		"apiVersion", scalar("monitoring.coreos.com/v1"),
		"kind", scalar("PrometheusRule"),
		"metadata", mapping(
			"name", scalar(PrometheusRuleName),
			"labels", mapping(
				"app.kubernetes.io/name", scalar("sentinel"),
				"app.kubernetes.io/component", scalar("alerting"),
			),
		),
		"spec", mapping("groups", groups),
	)

	var buf bytes.Buffer
	buf.WriteString(generatedHeader)
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(manifest); err != nil {
		return nil, fmt.Errorf("encode PrometheusRule: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode PrometheusRule: %w", err)
	}
	return buf.Bytes(), nil
}

// mappingValue returns the value of key in the mapping node m, or nil.
func mappingValue(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func stripComments(n *yaml.Node) {
	n.HeadComment, n.LineComment, n.FootComment = "", "", ""
	for _, c := range n.Content {
		stripComments(c)
	}
}

func scalar(v string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v}
}

// mapping builds a mapping node from alternating keys and values, in order.
func mapping(kv ...any) *yaml.Node {
	m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	for i := 0; i+1 < len(kv); i += 2 {
		m.Content = append(m.Content, scalar(kv[i].(string)), kv[i+1].(*yaml.Node))
	}
	return m
}

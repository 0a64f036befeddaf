package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// FuzzParse parses arbitrary configuration files, seeded with every file
// of testdata: no panic, and a rejected file's message quotes none of its
// values (any scalar of 8 bytes or more that is not a key of the schema).
func FuzzParse(f *testing.F) {
	for _, pattern := range []string{"testdata/*.yml", "testdata/leak/*.yml", "../deploy/*.yml"} {
		files, err := filepath.Glob(pattern)
		require.NoError(f, err)
		for _, file := range files {
			content, err := os.ReadFile(file)
			require.NoError(f, err)
			f.Add(content)
		}
	}
	f.Fuzz(func(t *testing.T, content []byte) {
		cfg, err := Parse(content, t.TempDir())
		if err == nil {
			require.NotNil(t, cfg)
			require.NotEmpty(t, cfg.Tenants)
			return
		}
		msg := err.Error()
		dec := yaml.NewDecoder(strings.NewReader(string(content)))
		for {
			var doc yaml.Node
			if dec.Decode(&doc) != nil {
				break
			}
			requireNotQuoted(t, &doc, msg)
		}
	})
}

func requireNotQuoted(t *testing.T, n *yaml.Node, msg string) {
	if n == nil {
		return
	}
	if n.Kind == yaml.ScalarNode && len(n.Value) >= 8 && !schemaKeys().names[n.Value] {
		require.NotContains(t, msg, n.Value, "the message quotes a value of the configuration")
	}
	for _, c := range n.Content {
		requireNotQuoted(t, c, msg)
	}
}

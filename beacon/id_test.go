package beacon

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestID(t *testing.T) {
	long := strings.Repeat("a", 200)
	for _, tc := range []struct {
		in, sanitized string
		valid         bool
	}{
		{"my-agent-01", "my-agent-01", true},
		{"a", "a", true},
		{"agent@acme:prod_1.2", "agent@acme:prod_1.2", true},
		{"-agent", "agent", false},
		{"..agent", "agent", false},
		{"my agent/01", "my-agent-01", false},
		{"Ünïcode", "n-code", false},
		{"", "", false},
		{"///", "", false},
		{long, long[:128], false},
		{long[:128], long[:128], true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			require.Equal(t, tc.valid, ValidID(tc.in))
			got := SanitizeID(tc.in)
			require.Equal(t, tc.sanitized, got)
			if got != "" {
				require.True(t, ValidID(got))
			}
		})
	}
}

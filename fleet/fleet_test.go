package fleet

import (
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var agentIDRegexp = regexp.MustCompile(agentIDPattern)

var agentIDSeeds = []string{
	"", "a", "A", "0", "agent-0000001", "a.b_c:d@e-f", "-a", ".a", "_a", ":a", "@a",
	"a b", "a/b", "a\n", "a\x00", "é", "aé", "a\xff", "a$", "a%2F",
	strings.Repeat("a", 127), strings.Repeat("a", 128), strings.Repeat("a", 129),
	"Z" + strings.Repeat("9", 127), "Z" + strings.Repeat("9", 128),
}

// TestValidAgentIDMatchesPattern holds the hand-written check to the
// regexp it replaces, on every byte in every position that matters.
func TestValidAgentIDMatchesPattern(t *testing.T) {
	for _, id := range agentIDSeeds {
		require.Equal(t, agentIDRegexp.MatchString(id), ValidAgentID(id), "id %q", id)
	}
	for c := range 256 {
		b := string([]byte{byte(c)})
		for _, id := range []string{b, "a" + b, b + "a", "ab" + b + "cd", strings.Repeat("a", 127) + b} {
			require.Equal(t, agentIDRegexp.MatchString(id), ValidAgentID(id), "id %q", id)
		}
	}
}

func TestValidAgentID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"agent-1", true},
		{"a.b_c:d@e-f", true},
		{strings.Repeat("x", 128), true},
		{strings.Repeat("x", 129), false},
		{"", false},
		{"-agent", false},
		{"agent/1", false},
		{"agent 1", false},
		{"agént", false},
	} {
		require.Equal(t, tc.want, ValidAgentID(tc.id), "id %q", tc.id)
	}
}

func FuzzValidAgentID(f *testing.F) {
	for _, id := range agentIDSeeds {
		f.Add(id)
	}
	f.Fuzz(func(t *testing.T, id string) {
		require.Equal(t, agentIDRegexp.MatchString(id), ValidAgentID(id), "id %q", id)
	})
}

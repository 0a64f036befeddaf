package collector

import (
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/fleet"
)

// The families the alerting rules read: never optional.
var ruleFamilies = []string{
	"sentinel_agent_last_heartbeat_timestamp_seconds",
	"sentinel_agent_heartbeat_interval_seconds",
	"sentinel_agent_lease_expiry_timestamp_seconds",
	"sentinel_agent_stopped",
	"sentinel_agent_revoked",
	"sentinel_agents",
}

func TestOptionalFamiliesNeverIncludeTheRules(t *testing.T) {
	for _, o := range Optional {
		require.NotContains(t, ruleFamilies, o.Family)
		require.Equal(t, families[o.fam].name, o.Family, o.Name)
	}
}

// Switching families off removes exactly them, from both exposition paths,
// which still agree.
func TestDisabledFamilies(t *testing.T) {
	all := make([]string, 0, numFamilies)
	for _, f := range families {
		all = append(all, f.name)
	}
	cases := map[string][]OptionalFamily{"none": nil, "all": Optional}
	for _, o := range Optional {
		cases[o.Name] = []OptionalFamily{o}
	}
	for name, disabled := range cases {
		t.Run(name, func(t *testing.T) {
			clock := &fakeClock{t: epoch}
			c := New(fiveStates(t), Options{
				Thresholds: func() *fleet.ThresholdPolicy { return policy },
				Now:        clock.Now,
				Disabled:   disabled,
			})
			off := map[string]bool{}
			for _, o := range disabled {
				off[o.Family] = true
			}
			res, body := scrapeHandler(t, c.Handler(prometheus.NewRegistry(), nil))
			require.Equal(t, http.StatusOK, res.StatusCode)
			got := map[string]bool{}
			for _, mf := range parseText(t, body) {
				got[mf.GetName()] = true
			}
			for _, f := range all {
				require.Equal(t, !off[f], got[f], "family %s", f)
			}
			for _, f := range ruleFamilies {
				require.True(t, got[f], "rule family %s", f)
			}

			reg := prometheus.NewPedanticRegistry()
			require.NoError(t, reg.Register(c))
			want, err := reg.Gather()
			require.NoError(t, err)
			require.Equal(t, normalized(t, want), normalized(t, parseText(t, body)))
			require.Equal(t, testutil.CollectAndCount(c), countSamples(t, body), "the same samples")
		})
	}
}

func countSamples(t *testing.T, body string) int {
	t.Helper()
	n := 0
	for _, mf := range parseText(t, body) {
		n += len(mf.GetMetric())
	}
	return n
}

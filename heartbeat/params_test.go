package heartbeat

import (
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"
)

var agentIDParamSeeds = []string{
	"agentId=a1", "agentId=", "", "agentId", "agentId=a%2Fb", "agentId=a+b", "agentId=a;b",
	"agentId=a&agentId=b", "x=1&agentId=c", "agentId=a=b", "agentid=a", "agentId=%zz", "agentId=a%",
}

// checkAgentIDParam is the property: agentIDParam answers as url.Values does.
func checkAgentIDParam(t *testing.T, rawQuery string) {
	u := &url.URL{Path: "/v1/heartbeat", RawQuery: rawQuery}
	require.Equal(t, u.Query().Get("agentId"), agentIDParam(u), "query %q", rawQuery)
}

func TestAgentIDParam(t *testing.T) {
	for _, q := range agentIDParamSeeds {
		checkAgentIDParam(t, q)
	}
}

func FuzzAgentIDParam(f *testing.F) {
	for _, q := range agentIDParamSeeds {
		f.Add(q)
	}
	f.Fuzz(checkAgentIDParam)
}

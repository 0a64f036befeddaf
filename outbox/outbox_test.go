package outbox

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWithSequence(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
		seq              uint64
		err              bool
	}{
		{name: "sets it", body: `{"event":"agent.revoked","sequence":0}`, seq: 7, want: `{"event":"agent.revoked","sequence":7}`},
		{name: "adds it", body: `{"event":"x"}`, seq: 1, want: `{"event":"x","sequence":1}`},
		{name: "keeps html as is", body: `{"reason":"<b>&</b>"}`, seq: 2, want: `{"reason":"<b>&</b>","sequence":2}`},
		{name: "not an object", body: `[1]`, err: true},
		{name: "not JSON", body: `{`, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := WithSequence([]byte(tc.body), tc.seq)
			if tc.err {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.JSONEq(t, tc.want, string(got))
			again, err := WithSequence([]byte(tc.body), tc.seq)
			require.NoError(t, err)
			require.Equal(t, got, again, "every attempt sends the same bytes")
		})
	}
}

func FuzzWithSequence(f *testing.F) {
	f.Add([]byte(`{"event":"heartbeat.state_change","sequence":0,"agentId":"a1"}`), uint64(3))
	f.Add([]byte(`{}`), uint64(0))
	f.Add([]byte(`nope`), uint64(1))
	f.Fuzz(func(t *testing.T, body []byte, seq uint64) {
		got, err := WithSequence(body, seq)
		if err != nil {
			return
		}
		var m map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(got, &m))
		var s uint64
		require.NoError(t, json.Unmarshal(m["sequence"], &s))
		require.Equal(t, seq, s)
	})
}

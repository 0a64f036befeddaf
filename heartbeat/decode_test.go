package heartbeat

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var decodeSeeds = []string{
	benchBody,
	`{}`,
	` { "status" : "healthy" } `,
	`{"status":"healthy","status":"degraded"}`,
	`{"Status":"healthy"}`,
	`{"status":"h\u00e9"}`,
	"{\"version\":\"1.0\x7f\",\"platform\":{\"os\":\"linux\x01\"}}",
	"{\"version\":\"v\x7f\"}",
	`{"status":null}`,
	`{"uptime_seconds":1e400}`,
	`{"uptime_seconds":-0.5e-3}`,
	`{"exit_code":1.0}`,
	`{"exit_code":-3}`,
	`{"exit_code":9223372036854775808}`,
	`{"platform":{"pid":12,"type":"docker"},"metrics":{}}`,
	`{"platform":null}`,
	`{"metrics":{"errors":01}}`,
	`{"unknown":[1,{"a":2}],"status":"healthy"}`,
	`{"status":"healthy"}x`,
	`{"status":"healthy",}`,
	`[1]`,
	`null`,
	`{"version":"1.0","heartbeat_interval_seconds":30}`,
	"{\"status\":\"a\tb\"}",
	`{"silent_after":3,"zombie_after":8}`,
	`{"silent_after":3.0}`,
	`{"zombie_after":-0}`,
	`{"silent_after":"3"}`,
	`{"zombie_after":99999999999999999999}`,
	`{"uptime_seconds":999999999999999,"heartbeat_interval_seconds":1000000000000000}`,
	`{"uptime_seconds":-0,"metrics":{"errors":0.5}}`,
	"{\"version\":\"abcdefgh\x7fijklmnop\"}",
	"{\"version\":\"abcdefghijklmno\x01\"}",
	`{"version":"abcdefghij\"klmno"}`,
	`{"version":"abcdefghijklmnopqrstuvwxyz0123456789-._~"}`,
	`{"platform":{"type":"kubernetes","type":"docker"}}`,
	`{"metrics":{"errors":1,"errors":2}}`,
	loadgenBody,
	`{"silent_after":null,"zombie_after":1e1}`,
}

// checkDecodeMatchesJSON is the property: decodeBeatBody agrees with
// encoding/json on every input, in result and in accepting or refusing.
func checkDecodeMatchesJSON(t *testing.T, data []byte) {
	var want, got beatBody
	wantErr := json.Unmarshal(data, &want)
	gotErr := decodeBeatBody(data, &got)
	require.Equal(t, wantErr == nil, gotErr == nil, "input %q: json error %v, decode error %v", data, wantErr, gotErr)
	if wantErr == nil {
		require.Equal(t, want, got, "input %q", data)
	}
}

func TestDecodeBeatBodyMatchesJSON(t *testing.T) {
	for _, seed := range decodeSeeds {
		t.Run(seed, func(t *testing.T) { checkDecodeMatchesJSON(t, []byte(seed)) })
	}
}

func TestFastDecodeTakesCanonicalBodies(t *testing.T) {
	var b beatBody
	require.True(t, fastDecodeBeat([]byte(benchBody), &b), "the canonical heartbeat must take the fast path")
	require.Equal(t, "production", b.Platform.Namespace)
	require.Equal(t, 145.0, b.Metrics.AvgLatencyMs)
}

func FuzzDecodeBeatBody(f *testing.F) {
	for _, seed := range decodeSeeds {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkDecodeMatchesJSON(t, data) })
}

// TestPlainLen holds the word-at-a-time scan to a byte loop, for every byte
// value in every position of strings a word long and longer, followed by a
// quote and by bytes the scan must not look at.
func TestPlainLen(t *testing.T) {
	naive := func(b []byte) (int, bool) {
		for i, c := range b {
			switch {
			case c == '"':
				return i, true
			case c < 0x20 || c >= 0x80 || c == '\\':
				return 0, false
			}
		}
		return 0, false
	}
	for n := range 20 {
		for pos := range n {
			for c := range 256 {
				for _, tail := range []string{``, `"`, `"\x00\xff\\`, `"aaaaaaaaaaaaaaaa`} {
					b := append(bytes.Repeat([]byte{'a'}, n), tail...)
					b[pos] = byte(c)
					wantN, wantOK := naive(b)
					gotN, gotOK := plainLen(b)
					require.Equal(t, wantOK, gotOK, "%q", b)
					if wantOK {
						require.Equal(t, wantN, gotN, "%q", b)
					}
				}
			}
		}
	}
	const printable = " ~!#$%&'()*+,-./0123456789:;<=>?@AZ[]^_`az{|}\x7f"
	n, ok := plainLen([]byte(printable + `"tail`))
	require.True(t, ok)
	require.Equal(t, len(printable), n)
}

func TestWholeNumber(t *testing.T) {
	for _, tok := range []string{"0", "7", "3600", "999999999999999", "1000000000000000", "1.5", "-1", "1e3", ""} {
		want, err := strconv.ParseFloat(tok, 64)
		got, ok := wholeNumber([]byte(tok))
		if ok {
			require.NoError(t, err, tok)
			require.Equal(t, want, got, tok)
		}
		require.Equal(t, len(tok) > 0 && len(tok) <= 15 && !strings.ContainsAny(tok, ".-e"), ok, tok)
	}
}

// loadgenBody is the body sentinel-loadgen sends (a Kubernetes agent).
const loadgenBody = `{"status":"healthy","uptime_seconds":3660,"heartbeat_interval_seconds":60,"version":"1.4.2","platform":{"type":"kubernetes","pod_name":"loadgen-0000042-7f8a9b6c5d-x2x9q","namespace":"production","node":"ip-10-0-12-34.eu-west-1.compute.internal","container_id":"containerd://4f2a9c0e1b7d3a5f8e6c2b1d0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f","image":"registry.example.com/agents/support-bot:1.4.2","hostname":"loadgen-0000042","os":"linux","pid":1},"metrics":{"requests_handled":1525,"errors":0,"avg_latency_ms":145}}`

func BenchmarkDecodeBeatBody(b *testing.B) {
	data := []byte(loadgenBody)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		var out beatBody
		if err := decodeBeatBody(data, &out); err != nil {
			b.Fatal(err)
		}
	}
}

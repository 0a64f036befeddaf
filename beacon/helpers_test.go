package beacon

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

// request is one heartbeat as the scripted server saw it.
type request struct {
	N     int // 1-based
	Auth  string
	Path  string
	Query string
	Body  Heartbeat
	Raw   map[string]any
}

// answer is what the scripted server replies. A negative Code drops the
// connection instead.
type answer struct {
	Code int
	Body string
}

// scriptedServer answers heartbeats with script and records them on reqs.
type scriptedServer struct {
	*httptest.Server
	reqs chan request
	n    atomic.Int64
}

func newScriptedServer(t *testing.T, script func(r request) answer) *scriptedServer {
	t.Helper()
	s := &scriptedServer{reqs: make(chan request, 1000)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req := request{
			N:     int(s.n.Add(1)),
			Auth:  strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "),
			Path:  r.URL.Path,
			Query: r.URL.RawQuery,
		}
		if err := json.Unmarshal(raw, &req.Body); err != nil {
			t.Errorf("heartbeat body %q: %v", raw, err)
		}
		_ = json.Unmarshal(raw, &req.Raw)
		a := script(req)
		if a.Code < 0 {
			// Drop the connection without an answer: a connection reset.
			s.reqs <- req
			panic(http.ErrAbortHandler)
		}
		if a.Code == 0 {
			a.Code = http.StatusOK
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a.Code)
		io.WriteString(w, a.Body)
		s.reqs <- req
	}))
	t.Cleanup(s.Close)
	return s
}

// next returns the next recorded heartbeat, failing after a generous timeout.
func (s *scriptedServer) next(t *testing.T) request {
	t.Helper()
	select {
	case r := <-s.reqs:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no heartbeat arrived")
		return request{}
	}
}

// okAnswer is a lease renewal with the given interval in seconds.
func okAnswer(interval float64, extra string) answer {
	b, _ := json.Marshal(map[string]any{
		"installation_id": "a1", "lease_renewed": true, "state": "ACTIVE",
		"heartbeat_interval_seconds": interval,
	})
	if extra != "" {
		b = append(b[:len(b)-1], []byte(","+extra+"}")...)
	}
	return answer{Body: string(b)}
}

// logBuffer is a goroutine-safe log sink.
type logBuffer struct{ testutil.SyncBuffer }

// count returns how many log lines contain all of subs.
func (l *logBuffer) count(subs ...string) int {
	n := 0
	for _, line := range strings.Split(l.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			n++
		}
	}
	return n
}

func newTestLogger() (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

var testPlatform = &Platform{Type: PlatformBareMetal, Hostname: "host-1", OS: "linux", PID: 42}

// testConfig is a Config against url with a quick interval.
func testConfig(t *testing.T, url string) (Config, *logBuffer) {
	t.Helper()
	logger, lb := newTestLogger()
	return Config{
		Endpoint: url,
		AgentID:  "agent-1",
		Token:    "api-key",
		Interval: 50 * time.Millisecond,
		Platform: testPlatform,
		Logger:   logger,
	}, lb
}

func mustNew(t *testing.T, cfg Config) *Beacon {
	t.Helper()
	b, err := New(cfg)
	require.NoError(t, err)
	return b
}

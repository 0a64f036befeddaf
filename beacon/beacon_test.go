package beacon

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// runBeacon runs b in the background; the returned func cancels it and
// returns Run's error.
func runBeacon(t *testing.T, b *Beacon) (stop func() error, done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- b.Run(ctx) }()
	t.Cleanup(cancel)
	return func() error {
		cancel()
		select {
		case err := <-ch:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after cancel")
			return nil
		}
	}, ch
}

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		err  string
	}{
		{"no endpoint", Config{AgentID: "a", Token: "k"}, "no sentinel endpoint"},
		{"bad scheme", Config{Endpoint: "ftp://x", AgentID: "a", Token: "k"}, "scheme must be http or https"},
		{"bad id", Config{Endpoint: "http://x", AgentID: "-a", Token: "k"}, `agent id "-a" is invalid`},
		{"no credential", Config{Endpoint: "http://x", AgentID: "a"}, "no credential"},
		{"bad protocol", Config{Endpoint: "http://x", AgentID: "a", Token: "k", Protocol: "grpc"}, `unknown protocol "grpc"`},
		{"negative silent_after", Config{Endpoint: "http://x", AgentID: "a", Token: "k", SilentAfter: -1}, "must be positive"},
		{"zombie_after not above silent_after", Config{Endpoint: "http://x", AgentID: "a", Token: "k", SilentAfter: 4, ZombieAfter: 4}, "zombie_after (4) must be greater than silent_after (4)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Platform = testPlatform
			_, err := New(tc.cfg)
			require.ErrorContains(t, err, tc.err)
		})
	}
}

func TestRegistrationAndTokens(t *testing.T) {
	srv := newScriptedServer(t, func(r request) answer {
		switch r.N {
		case 1:
			return okAnswer(0.05, `"registered":true,"lease_duration_seconds":0.25,"runtime_token":{"runtime_token":"srt_1","expires_at":"2030-01-01T00:00:00Z","token_version":1}`)
		case 2:
			return okAnswer(0.05, `"refreshed_token":{"runtime_token":"srt_2","expires_at":"2031-01-01T00:00:00Z","token_version":2}`)
		}
		return okAnswer(0.05, `"refreshed_token":null,"command":null`)
	})
	cfg, _ := testConfig(t, srv.URL)
	cfg.TokenFile = filepath.Join(t.TempDir(), "token")
	cfg.Version = "1.4.2"
	cfg.Interval = time.Hour // the answered interval wins
	cfg.Report = func() Report {
		return Report{Metrics: &Metrics{RequestsHandled: 1500, Errors: 2, AvgLatencyMs: 145}}
	}
	b := mustNew(t, cfg)
	stop, _ := runBeacon(t, b)

	r := srv.next(t)
	require.Equal(t, "/api/v1/installations/agent-1/heartbeat", r.Path)
	require.Equal(t, "api-key", r.Auth)
	require.Equal(t, StatusStarting, r.Body.Status)
	require.Equal(t, 3600.0, r.Body.HeartbeatIntervalSeconds)
	require.Equal(t, "1.4.2", r.Body.Version)
	require.Equal(t, testPlatform, r.Body.Platform)
	require.Equal(t, &Metrics{RequestsHandled: 1500, Errors: 2, AvgLatencyMs: 145}, r.Body.Metrics)
	require.NotContains(t, r.Raw, "exit_code")
	require.NotContains(t, r.Raw, "silent_after", "without thresholds of its own the agent keeps its tenant's")
	require.NotContains(t, r.Raw, "zombie_after")

	r = srv.next(t)
	require.Equal(t, "srt_1", r.Auth, "the runtime token replaces the API key")
	require.Equal(t, StatusHealthy, r.Body.Status)
	r = srv.next(t)
	require.Equal(t, "srt_2", r.Auth, "a refreshed token replaces the runtime token")
	require.NoError(t, stop())

	tok, err := ReadTokenFile(cfg.TokenFile)
	require.NoError(t, err)
	require.Equal(t, "srt_2", tok)
	fi, err := os.Stat(cfg.TokenFile)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
}

func TestTokenFileAtStart(t *testing.T) {
	srv := newScriptedServer(t, func(r request) answer { return okAnswer(0.05, "") })
	cfg, _ := testConfig(t, srv.URL)
	cfg.TokenFile = filepath.Join(t.TempDir(), "token")
	require.NoError(t, WriteTokenFile(cfg.TokenFile, "srt_saved"))
	cfg.Token = ""
	stop, _ := runBeacon(t, mustNew(t, cfg))
	require.Equal(t, "srt_saved", srv.next(t).Auth)
	require.NoError(t, stop())
}

func TestRuntimeTokenRefusedFallsBack(t *testing.T) {
	srv := newScriptedServer(t, func(r request) answer {
		if r.Auth != "api-key" {
			return answer{Code: http.StatusUnauthorized, Body: `{"error":"token expired"}`}
		}
		return okAnswer(0.05, "")
	})
	cfg, lb := testConfig(t, srv.URL)
	cfg.TokenFile = filepath.Join(t.TempDir(), "token")
	require.NoError(t, WriteTokenFile(cfg.TokenFile, "srt_stale"))
	stop, _ := runBeacon(t, mustNew(t, cfg))
	require.Equal(t, "srt_stale", srv.next(t).Auth)
	require.Equal(t, "api-key", srv.next(t).Auth)
	require.Equal(t, "api-key", srv.next(t).Auth)
	require.NoError(t, stop())
	require.Equal(t, 1, lb.count("falling back to the configured token"))
	require.Zero(t, lb.count("level=ERROR"), "the fallback is not a failure")
	_, err := os.Stat(cfg.TokenFile)
	require.ErrorIs(t, err, os.ErrNotExist, "the refused token is not presented again at the next start")

	t.Run("without a configured token the file is kept", func(t *testing.T) {
		cfg.Token = ""
		require.NoError(t, WriteTokenFile(cfg.TokenFile, "srt_stale"))
		stop, _ := runBeacon(t, mustNew(t, cfg))
		require.Equal(t, "srt_stale", srv.next(t).Auth)
		require.Equal(t, "srt_stale", srv.next(t).Auth)
		require.NoError(t, stop())
		tok, err := ReadTokenFile(cfg.TokenFile)
		require.NoError(t, err)
		require.Equal(t, "srt_stale", tok)
	})
	t.Run("a token written meanwhile is kept", func(t *testing.T) {
		cfg, _ := testConfig(t, srv.URL)
		cfg.TokenFile = filepath.Join(t.TempDir(), "token")
		require.NoError(t, WriteTokenFile(cfg.TokenFile, "srt_stale"))
		b := mustNew(t, cfg)
		require.NoError(t, WriteTokenFile(cfg.TokenFile, "srt_newer"))
		stop, _ := runBeacon(t, b)
		require.Equal(t, "srt_stale", srv.next(t).Auth)
		require.NoError(t, stop())
		tok, err := ReadTokenFile(cfg.TokenFile)
		require.NoError(t, err)
		require.Equal(t, "srt_newer", tok)
	})
}

func TestAnsweredInterval(t *testing.T) {
	for _, tc := range []struct {
		name     string
		protocol Protocol
		answer   func() answer
	}{
		{"beacon interval", ProtocolBeacon, func() answer { return okAnswer(0.05, "") }},
		{"beacon next_heartbeat_at", ProtocolBeacon, func() answer {
			return answer{Body: `{"lease_renewed":true,"next_heartbeat_at":"` + time.Now().Add(50*time.Millisecond).UTC().Format(time.RFC3339Nano) + `"}`}
		}},
		{"abs nextDeadline", ProtocolABS, func() answer {
			return answer{Body: `{"status":"ACTIVE","agentId":"agent-1","nextDeadline":"` + time.Now().Add(50*time.Millisecond).UTC().Format(time.RFC3339Nano) + `"}`}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newScriptedServer(t, func(request) answer { return tc.answer() })
			cfg, _ := testConfig(t, srv.URL)
			cfg.Interval = time.Hour
			cfg.Protocol = tc.protocol
			stop, _ := runBeacon(t, mustNew(t, cfg))
			first := srv.next(t)
			start := time.Now()
			srv.next(t)
			srv.next(t)
			require.Less(t, time.Since(start), 5*time.Second, "beats follow the answered interval, not the hour asked for")
			require.NoError(t, stop())
			if tc.protocol == ProtocolABS {
				require.Equal(t, "/v1/heartbeat", first.Path)
				require.Equal(t, "agentId=agent-1", first.Query)
			}
		})
	}
}

func TestFailureStreakLoggedOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fail  answer
		level string
		msg   string
	}{
		{"503", answer{Code: http.StatusServiceUnavailable, Body: `{"error":"not ready"}`}, "level=WARN", "Sentinel unreachable or failing"},
		{"429", answer{Code: http.StatusTooManyRequests, Body: `{"error":"slow down"}`}, "level=WARN", "Sentinel unreachable or failing"},
		{"401", answer{Code: http.StatusUnauthorized, Body: `{"error":"unknown credential"}`}, "level=ERROR", "Sentinel refused the heartbeat"},
		{"403", answer{Code: http.StatusForbidden, Body: `{"error":"other tenant"}`}, "level=ERROR", "Sentinel refused the heartbeat"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newScriptedServer(t, func(r request) answer {
				if r.N <= 4 {
					return tc.fail
				}
				return okAnswer(0.02, "")
			})
			cfg, lb := testConfig(t, srv.URL)
			cfg.Interval = 20 * time.Millisecond
			stop, _ := runBeacon(t, mustNew(t, cfg))
			for range 6 {
				srv.next(t)
			}
			require.NoError(t, stop())
			require.Equal(t, 1, lb.count(tc.level, tc.msg), lb.String())
			require.Equal(t, 1, lb.count("level=INFO", "Sentinel reachable again", "failed_attempts=4"), lb.String())
			require.NotContains(t, lb.String(), "api-key", "secrets are never logged")
		})
	}
}

func TestMixedFailuresAreOneStreak(t *testing.T) {
	srv := newScriptedServer(t, func(r request) answer {
		switch {
		case r.N <= 4 && r.N%2 == 1:
			return answer{Code: http.StatusServiceUnavailable}
		case r.N <= 4:
			return answer{Code: http.StatusBadGateway, Body: "<html>"}
		}
		return okAnswer(0.02, "")
	})
	cfg, lb := testConfig(t, srv.URL)
	cfg.Interval = 20 * time.Millisecond
	stop, _ := runBeacon(t, mustNew(t, cfg))
	for range 6 {
		srv.next(t)
	}
	require.NoError(t, stop())
	require.Equal(t, 1, lb.count("level=WARN"), lb.String())
}

func TestUnreachable(t *testing.T) {
	// Every connection is dropped: a transport failure, as when sentinel is
	// down behind a load balancer.
	attempts := make(chan struct{}, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		require.NoError(t, err)
		conn.Close()
		attempts <- struct{}{}
	}))
	t.Cleanup(srv.Close)
	cfg, lb := testConfig(t, srv.URL)
	cfg.Interval = 20 * time.Millisecond
	stop, done := runBeacon(t, mustNew(t, cfg))
	for range 5 {
		select {
		case <-attempts:
		case err := <-done:
			t.Fatalf("Run ended although sentinel is only unreachable: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("beacon stopped retrying")
		}
	}
	require.NoError(t, stop())
	require.Equal(t, 1, lb.count("level=WARN", "Sentinel unreachable"), lb.String())
	require.Zero(t, lb.count("level=ERROR"), lb.String())
}

func TestStop(t *testing.T) {
	for _, tc := range []struct {
		name     string
		protocol Protocol
		body     string
		want     error
		stop     StopError
	}{
		{"revoked", ProtocolBeacon, `{"installation_id":"a1","lease_renewed":false,"revoked":true,"reason":"Emergency shutdown initiated by admin","shutdown_timeout_ms":5000}`,
			ErrRevoked, StopError{Revoked: true, Reason: "Emergency shutdown initiated by admin", ShutdownTimeout: 5 * time.Second, HasShutdownTimeout: true}},
		{"abs revoked", ProtocolABS, `{"status":"REVOKED","agentId":"agent-1","revoked":true,"reason":"zombie","shutdown_timeout_ms":250}`,
			ErrRevoked, StopError{Revoked: true, Reason: "zombie", ShutdownTimeout: 250 * time.Millisecond, HasShutdownTimeout: true}},
		{"revoked without grace", ProtocolBeacon, `{"installation_id":"a1","lease_renewed":false,"revoked":true,"reason":"now","shutdown_timeout_ms":0}`,
			ErrRevoked, StopError{Revoked: true, Reason: "now", HasShutdownTimeout: true}},
		{"revoked naming no timeout", ProtocolBeacon, `{"installation_id":"a1","lease_renewed":false,"revoked":true,"reason":"any"}`,
			ErrRevoked, StopError{Revoked: true, Reason: "any"}},
		{"terminate", ProtocolBeacon, `{"installation_id":"a1","lease_renewed":true,"state":"ACTIVE","heartbeat_interval_seconds":1,"command":"terminate"}`,
			ErrTerminated, StopError{}},
		{"abs terminate", ProtocolABS, `{"status":"ACTIVE","agentId":"agent-1","nextDeadline":"2030-01-01T00:00:00Z","command":"terminate"}`,
			ErrTerminated, StopError{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newScriptedServer(t, func(r request) answer {
				if r.N == 1 {
					return okAnswer(0.02, "")
				}
				return answer{Body: tc.body}
			})
			cfg, _ := testConfig(t, srv.URL)
			cfg.Protocol = tc.protocol
			err := mustNew(t, cfg).Run(context.Background())
			require.ErrorIs(t, err, tc.want)
			var stop *StopError
			require.ErrorAs(t, err, &stop)
			require.Equal(t, tc.stop, *stop)
		})
	}
}

func TestCommands(t *testing.T) {
	// At-least-once delivery repeats a command; only changes reach OnCommand.
	script := []string{`"pause"`, `"pause"`, `null`, `"resume"`, `"resume"`, `"pause"`, `"bogus"`, `"bogus"`}
	for _, tc := range []struct {
		protocol Protocol
		answer   func(command string) answer
	}{
		{ProtocolBeacon, func(c string) answer { return okAnswer(0.01, `"command":`+c) }},
		{ProtocolABS, func(c string) answer {
			if c == "" {
				return answer{Body: `{"status":"ACTIVE","agentId":"agent-1"}`}
			}
			return answer{Body: `{"status":"ACTIVE","agentId":"agent-1","command":` + c + `}`}
		}},
	} {
		t.Run(string(tc.protocol), func(t *testing.T) {
			srv := newScriptedServer(t, func(r request) answer {
				if r.N <= len(script) {
					return tc.answer(script[r.N-1])
				}
				return tc.answer("")
			})
			cfg, lb := testConfig(t, srv.URL)
			cfg.Protocol = tc.protocol
			cfg.Interval = 10 * time.Millisecond
			var (
				mu  sync.Mutex
				got []Command
			)
			cfg.OnCommand = func(c Command) {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, c)
			}
			stop, _ := runBeacon(t, mustNew(t, cfg))
			for range len(script) + 1 {
				srv.next(t)
			}
			require.NoError(t, stop())
			mu.Lock()
			defer mu.Unlock()
			require.Equal(t, []Command{CommandPause, CommandResume, CommandPause}, got)
			require.Equal(t, 1, lb.count("unknown command"))
		})
	}
}

func TestShutdown(t *testing.T) {
	srv := newScriptedServer(t, func(r request) answer {
		return answer{Body: `{"installation_id":"a1","lease_renewed":false,"state":"STOPPED"}`}
	})
	cfg, _ := testConfig(t, srv.URL)
	cfg.Report = func() Report { return Report{Status: StatusDegraded} }
	b := mustNew(t, cfg)
	require.NoError(t, b.Shutdown(context.Background(), 7))
	r := srv.next(t)
	require.Equal(t, StatusShutdown, r.Body.Status)
	require.NotNil(t, r.Body.ExitCode)
	require.Equal(t, 7, *r.Body.ExitCode)
	require.Equal(t, float64(7), r.Raw["exit_code"])

	t.Run("exit code 0 is sent", func(t *testing.T) {
		require.NoError(t, b.Shutdown(context.Background(), 0))
		r := srv.next(t)
		require.Equal(t, float64(0), r.Raw["exit_code"])
	})
	t.Run("retryable failures are retried", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			first answer
		}{
			{"503", answer{Code: 503, Body: `{"error":"cannot persist"}`}},
			{"429", answer{Code: 429, Body: `{"error":"slow down"}`}},
			{"connection reset", answer{Code: -1}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				srv := newScriptedServer(t, func(r request) answer {
					if r.N == 1 {
						return tc.first
					}
					return answer{Body: `{"installation_id":"a1","lease_renewed":false,"state":"STOPPED"}`}
				})
				cfg, _ := testConfig(t, srv.URL)
				require.NoError(t, mustNew(t, cfg).Shutdown(context.Background(), 3))
				for range 2 {
					r := srv.next(t)
					require.Equal(t, StatusShutdown, r.Body.Status)
					require.Equal(t, float64(3), r.Raw["exit_code"])
				}
			})
		}
	})
	t.Run("retries end with the context", func(t *testing.T) {
		srv := newScriptedServer(t, func(request) answer { return answer{Code: 503, Body: `{"error":"cannot persist"}`} })
		cfg.Endpoint = srv.URL
		ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
		defer cancel()
		err := mustNew(t, cfg).Shutdown(ctx, 1)
		var se *StatusError
		require.ErrorAs(t, err, &se)
		require.Equal(t, 503, se.Code)
		require.Equal(t, "cannot persist", se.Message)
		require.GreaterOrEqual(t, len(srv.reqs), 2, "retried")
	})
	t.Run("a refusal is not retried", func(t *testing.T) {
		srv := newScriptedServer(t, func(request) answer { return answer{Code: 400, Body: `{"error":"bad"}`} })
		cfg.Endpoint = srv.URL
		err := mustNew(t, cfg).Shutdown(context.Background(), 1)
		var se *StatusError
		require.ErrorAs(t, err, &se)
		require.Equal(t, 400, se.Code)
		require.Len(t, srv.reqs, 1)
	})
}

func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		n        int
		interval time.Duration
		lo, hi   time.Duration
	}{
		{1, time.Minute, 500 * time.Millisecond, time.Second},
		{2, time.Minute, time.Second, 2 * time.Second},
		{4, time.Minute, 4 * time.Second, 8 * time.Second},
		{7, time.Minute, 30 * time.Second, time.Minute},
		{100, time.Minute, 30 * time.Second, time.Minute},
		{1, time.Second, 125 * time.Millisecond, 250 * time.Millisecond},
		{3, time.Second, 500 * time.Millisecond, time.Second},
		{1, time.Millisecond, minWait, minWait},
	} {
		for range 50 {
			d := backoff(tc.n, tc.interval)
			require.GreaterOrEqual(t, d, tc.lo, "n=%d interval=%v", tc.n, tc.interval)
			require.LessOrEqual(t, d, tc.hi, "n=%d interval=%v", tc.n, tc.interval)
		}
	}
}

func TestStopErrorIs(t *testing.T) {
	require.True(t, errors.Is(&StopError{Revoked: true}, ErrRevoked))
	require.False(t, errors.Is(&StopError{Revoked: true}, ErrTerminated))
	require.True(t, errors.Is(&StopError{}, ErrTerminated))
	require.EqualError(t, &StopError{Revoked: true, Reason: "r"}, "revoked by sentinel: r")
}

// TestRunFinishesHeartbeatInFlight: a heartbeat under way when Run is
// cancelled completes before Run returns, so that it cannot reach sentinel
// after the final shutdown heartbeat.
func TestRunFinishesHeartbeatInFlight(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
		w.Write([]byte(`{"lease_renewed":true,"heartbeat_interval_seconds":60}`))
	}))
	t.Cleanup(srv.Close)
	cfg, _ := testConfig(t, srv.URL)
	stop, done := runBeacon(t, mustNew(t, cfg))
	<-arrived
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	select {
	case <-done:
		t.Fatal("Run returned with a heartbeat in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	require.NoError(t, <-stopped)
}

// The agent's own thresholds go with every heartbeat, the final one too.
func TestThresholdsSent(t *testing.T) {
	srv := newScriptedServer(t, func(request) answer { return okAnswer(0.05, "") })
	cfg, _ := testConfig(t, srv.URL)
	cfg.SilentAfter, cfg.ZombieAfter = 3, 8
	b := mustNew(t, cfg)
	stop, _ := runBeacon(t, b)
	for range 2 {
		r := srv.next(t)
		require.Equal(t, 3, r.Body.SilentAfter)
		require.Equal(t, 8, r.Body.ZombieAfter)
		require.Equal(t, 3.0, r.Raw["silent_after"])
	}
	require.NoError(t, stop())
}

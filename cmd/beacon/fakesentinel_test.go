package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/agentsentinel/sentinel/beacon"
)

// fakeSentinel is a small SPEC-conformant stand-in for sentinel (SPEC 2.1,
// 2.2, the kill-switch part of 3 and the agent series of 4), one tenant
// "acme". Besides standing in while the real app is unavailable, it can be
// scripted to fail (failCode), which the real app cannot.
type fakeSentinel struct {
	apiKey, adminToken string

	mu       sync.Mutex
	agents   map[string]*fakeAgent
	tokens   map[string]string // runtime token → agent id
	failCode int               // when set, heartbeats are answered with it
	// failShutdown answers the next shutdownFails shutdown heartbeats.
	failShutdown, shutdownFails int
}

type fakeAgent struct {
	id        string
	last      beacon.Heartbeat
	lastAt    time.Time
	interval  float64
	stopped   bool
	revoked   bool
	reason    string
	timeoutMs int64
	pending   beacon.Command
	delivered bool // pending was carried by an answer
	auths     []string
}

func newFakeSentinel(apiKey, adminToken string) *fakeSentinel {
	return &fakeSentinel{apiKey: apiKey, adminToken: adminToken, agents: map[string]*fakeAgent{}, tokens: map[string]string{}}
}

func (f *fakeSentinel) setFail(code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failCode = code
}

// failShutdowns answers the next n shutdown heartbeats with code.
func (f *fakeSentinel) failShutdowns(code, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failShutdown, f.shutdownFails = code, n
}

// auths returns the credentials agent id presented, in order.
func (f *fakeSentinel) auths(id string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a := f.agents[id]; a != nil {
		return append([]string(nil), a.auths...)
	}
	return nil
}

func (f *fakeSentinel) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/installations/{id}/heartbeat", func(w http.ResponseWriter, r *http.Request) {
		f.heartbeat(w, r, r.PathValue("id"), beacon.ProtocolBeacon)
	})
	mux.HandleFunc("POST /v1/heartbeat", func(w http.ResponseWriter, r *http.Request) {
		f.heartbeat(w, r, r.URL.Query().Get("agentId"), beacon.ProtocolABS)
	})
	mux.HandleFunc("POST /api/v1/installations/{id}/revoke", f.admin(func(w http.ResponseWriter, r *http.Request, a *fakeAgent) {
		var body struct {
			Reason            string `json:"reason"`
			ShutdownTimeoutMs int64  `json:"shutdown_timeout_ms"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		a.revoked, a.reason, a.timeoutMs = true, body.Reason, body.ShutdownTimeoutMs
		writeJSON(w, http.StatusOK, map[string]any{"installation_id": a.id, "revoked": true})
	}))
	mux.HandleFunc("POST /api/v1/installations/{id}/command", f.admin(func(w http.ResponseWriter, r *http.Request, a *fakeAgent) {
		var body struct {
			Command beacon.Command `json:"command"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		switch body.Command {
		case beacon.CommandPause, beacon.CommandResume, beacon.CommandTerminate:
		default:
			writeError(w, http.StatusBadRequest, "unknown command")
			return
		}
		a.pending, a.delivered = body.Command, false
		writeJSON(w, http.StatusOK, map[string]any{"installation_id": a.id, "command": body.Command})
	}))
	mux.HandleFunc("GET /metrics", f.metrics)
	return mux
}

func (f *fakeSentinel) heartbeat(w http.ResponseWriter, r *http.Request, id string, p beacon.Protocol) {
	if !beacon.ValidID(id) {
		writeError(w, http.StatusBadRequest, "invalid agent id")
		return
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, 64<<10+1))
	if err != nil || len(raw) > 64<<10 {
		writeError(w, http.StatusRequestEntityTooLarge, "body over 64 KiB")
		return
	}
	var hb beacon.Heartbeat
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &hb); err != nil {
			writeError(w, http.StatusBadRequest, "malformed body")
			return
		}
	}
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failCode != 0 {
		writeError(w, f.failCode, "scripted failure")
		return
	}
	if hb.Status == beacon.StatusShutdown && f.shutdownFails > 0 {
		f.shutdownFails--
		writeError(w, f.failShutdown, "scripted failure")
		return
	}
	isKey := tok == f.apiKey
	if owner, ok := f.tokens[tok]; ok && !isKey {
		if owner != id {
			writeError(w, http.StatusForbidden, "runtime token of another agent")
			return
		}
	} else if !isKey {
		w.Header().Set("WWW-Authenticate", "Bearer")
		writeError(w, http.StatusUnauthorized, "unknown credential")
		return
	}

	a := f.agents[id]
	registered := a == nil
	if registered {
		a = &fakeAgent{id: id}
		f.agents[id] = a
	}
	a.auths = append(a.auths, tok)
	if a.revoked {
		if p == beacon.ProtocolABS {
			writeJSON(w, http.StatusOK, map[string]any{"status": "REVOKED", "agentId": id, "revoked": true, "reason": a.reason, "shutdown_timeout_ms": a.timeoutMs})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"installation_id": id, "lease_renewed": false, "revoked": true, "reason": a.reason, "shutdown_timeout_ms": a.timeoutMs})
		return
	}
	now := time.Now().UTC()
	a.last, a.lastAt = hb, now
	a.interval = 60
	if hb.HeartbeatIntervalSeconds > 0 {
		a.interval = math.Min(math.Max(hb.HeartbeatIntervalSeconds, 1), 3600)
	}
	if a.delivered {
		a.pending, a.delivered = "", false // acknowledged by this heartbeat
	}
	if hb.Status == beacon.StatusShutdown {
		a.stopped = true
		writeJSON(w, http.StatusOK, map[string]any{"installation_id": id, "lease_renewed": false, "state": "STOPPED"})
		return
	}
	a.stopped = false
	next := now.Add(time.Duration(a.interval * float64(time.Second)))
	if p == beacon.ProtocolABS {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ACTIVE", "agentId": id, "nextDeadline": next.Format(time.RFC3339Nano)})
		return
	}
	resp := map[string]any{
		"installation_id": id, "lease_renewed": true, "state": "ACTIVE",
		"lease_expires_at":           now.Add(time.Duration(5 * a.interval * float64(time.Second))).Format(time.RFC3339Nano),
		"next_heartbeat_at":          next.Format(time.RFC3339Nano),
		"heartbeat_interval_seconds": a.interval,
		"command":                    nil,
		"refreshed_token":            nil,
	}
	if a.pending != "" {
		resp["command"], a.delivered = a.pending, true
	}
	if registered {
		resp["registered"] = true
		resp["lease_duration_seconds"] = 5 * a.interval
		if isKey {
			b := make([]byte, 16)
			_, _ = rand.Read(b)
			t := "srt_" + hex.EncodeToString(b)
			f.tokens[t] = id
			resp["runtime_token"] = map[string]any{"runtime_token": t, "expires_at": now.Add(90 * 24 * time.Hour).Format(time.RFC3339), "token_version": 1}
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (f *fakeSentinel) admin(h func(http.ResponseWriter, *http.Request, *fakeAgent)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+f.adminToken {
			writeError(w, http.StatusUnauthorized, "admin token required")
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		a := f.agents[r.PathValue("id")]
		if a == nil {
			writeError(w, http.StatusNotFound, "no such agent")
			return
		}
		h(w, r, a)
	}
}

func (f *fakeSentinel) metrics(w http.ResponseWriter, _ *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, 0, len(f.agents))
	for id := range f.agents {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var b strings.Builder
	b01 := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	for _, id := range ids {
		a := f.agents[id]
		l := fmt.Sprintf(`tenant="acme",agent_id=%q`, id)
		fmt.Fprintf(&b, "sentinel_agent_last_heartbeat_timestamp_seconds{%s} %f\n", l, float64(a.lastAt.UnixNano())/1e9)
		fmt.Fprintf(&b, "sentinel_agent_heartbeat_interval_seconds{%s} %g\n", l, a.interval)
		fmt.Fprintf(&b, "sentinel_agent_stopped{%s} %d\n", l, b01(a.stopped))
		fmt.Fprintf(&b, "sentinel_agent_revoked{%s} %d\n", l, b01(a.revoked))
		fmt.Fprintf(&b, "sentinel_agent_uptime_seconds{%s} %d\n", l, a.last.UptimeSeconds)
		if m := a.last.Metrics; m != nil {
			fmt.Fprintf(&b, "sentinel_agent_requests_handled_total{%s} %d\n", l, m.RequestsHandled)
			fmt.Fprintf(&b, "sentinel_agent_errors_total{%s} %d\n", l, m.Errors)
			fmt.Fprintf(&b, "sentinel_agent_latency_average_seconds{%s} %g\n", l, m.AvgLatencyMs/1000)
		}
		var p beacon.Platform
		if a.last.Platform != nil {
			p = *a.last.Platform
		}
		fmt.Fprintf(&b, "sentinel_agent_info{%s,platform=%q,status=%q,version=%q,hostname=%q,pod=%q,namespace=%q,node=%q,container_id=%q,image=%q,function=%q,region=%q} 1\n",
			l, p.Type, a.last.Status, a.last.Version, p.Hostname, p.PodName, p.Namespace, p.Node, p.ContainerID, p.Image, p.FunctionName, p.Region)
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	io.WriteString(w, b.String())
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

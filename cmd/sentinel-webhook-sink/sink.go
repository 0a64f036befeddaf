package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/agentsentinel/sentinel/webhook"
)

// maxBody bounds a delivery; sentinel's events are about half a kilobyte.
const maxBody = 1 << 20

// event holds the fields of every sentinel event type that the sink prints;
// the others are ignored.
type event struct {
	Event    string `json:"event"`
	EventID  string `json:"eventId"`
	TenantID string `json:"tenantId"`
	Sequence uint64 `json:"sequence"`
	AgentID  string `json:"agentId"`

	// heartbeat.state_change
	PreviousState string `json:"previousState"`
	NewState      string `json:"newState"`
	MissedBeats   int64  `json:"missedBeats"`
	OutageSeconds *int64 `json:"outageSeconds"`
	Alert         *struct {
		Name string `json:"name"`
	} `json:"alert"`

	// agent.revoked
	Reason            string `json:"reason"`
	Source            string `json:"source"`
	ShutdownTimeoutMs int64  `json:"shutdownTimeoutMs"`

	// pipeline.*
	TimeoutSeconds int64 `json:"timeoutSeconds"`
	SilentSeconds  int64 `json:"silentSeconds"`

	Message string `json:"message"`
}

// notification is the part of an Alertmanager webhook notification
// (version 4) that the sink prints.
type notification struct {
	Version string `json:"version"`
	Status  string `json:"status"`
	Alerts  []struct {
		Status string            `json:"status"`
		Labels map[string]string `json:"labels"`
	} `json:"alerts"`
}

// sink verifies and prints what it receives. It is safe for concurrent
// requests: lines are written whole, under mu.
type sink struct {
	verifier *webhook.Verifier
	now      func() time.Time

	mu   sync.Mutex
	out  io.Writer
	seen map[string]bool // eventIds delivered before
}

func newSink(v *webhook.Verifier, out io.Writer, now func() time.Time) *sink {
	return &sink{verifier: v, out: out, now: now, seen: map[string]bool{}}
}

func (s *sink) printf(format string, a ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.out, s.now().Format("15:04:05")+" "+format+"\n", a...)
}

// serveWebhook checks both signatures of a sentinel delivery over the raw
// body and prints the event: 401 when a signature is missing or wrong, 400
// when the verified body is no event, 200 otherwise (duplicates included:
// delivery is at least once, and a repeat must not be retried again).
func (s *sink) serveWebhook(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		s.printf("REJECTED a delivery: cannot read its body (over %d bytes?)", maxBody)
		http.Error(w, "cannot read the body", http.StatusBadRequest)
		return
	}
	// Sentinel signs every delivery in both formats: check each on its own.
	for _, check := range []struct {
		name   string
		verify func(http.Header, []byte) error
	}{
		{"X-ABS-Signature", s.verifier.VerifyABS},
		{"webhook-signature", s.verifier.VerifyStandard},
	} {
		if err := check.verify(r.Header, body); err != nil {
			s.printf("REJECTED a delivery: %s: %v", check.name, err)
			http.Error(w, "signature verification failed", http.StatusUnauthorized)
			return
		}
	}
	var e event
	if err := json.Unmarshal(body, &e); err != nil || e.Event == "" || e.EventID == "" {
		s.printf("REJECTED a signed delivery: not a sentinel event")
		http.Error(w, "not a sentinel event", http.StatusBadRequest)
		return
	}
	if e.EventID != r.Header.Get(webhook.HeaderDelivery) || e.Event != r.Header.Get(webhook.HeaderEvent) {
		s.printf("REJECTED a signed delivery: X-ABS-Delivery or X-ABS-Event differ from the body")
		http.Error(w, "headers differ from the body", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	dup := s.seen[e.EventID]
	s.seen[e.EventID] = true
	s.mu.Unlock()
	line := "verified " + describe(e)
	if dup {
		line += " (a repeated delivery: already processed)"
	}
	s.printf("%s", line)
	w.WriteHeader(http.StatusNoContent)
}

// describe renders an event on one line: what happened first, then the
// identifiers.
func describe(e event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-22s tenant=%s", e.Event, quote(e.TenantID))
	if e.AgentID != "" {
		fmt.Fprintf(&b, " agent=%s", quote(e.AgentID))
	}
	switch e.Event {
	case "heartbeat.state_change":
		fmt.Fprintf(&b, " %s -> %s missed=%d", quote(e.PreviousState), quote(e.NewState), e.MissedBeats)
		if e.OutageSeconds != nil {
			fmt.Fprintf(&b, " outage=%ds", *e.OutageSeconds)
		}
		if e.Alert != nil {
			fmt.Fprintf(&b, " alert=%s", quote(e.Alert.Name))
		}
	case "agent.revoked":
		fmt.Fprintf(&b, " source=%s reason=%q shutdown_timeout=%dms", quote(e.Source), e.Reason, e.ShutdownTimeoutMs)
	case "pipeline.silent":
		fmt.Fprintf(&b, " no Watchdog from Alertmanager for %ds: alerts may not be flowing", e.TimeoutSeconds)
	case "pipeline.restored":
		fmt.Fprintf(&b, " Watchdog back after %ds", e.SilentSeconds)
	case "webhook.test":
		fmt.Fprintf(&b, " message=%q", e.Message)
	}
	fmt.Fprintf(&b, " sequence=%d id=%s", e.Sequence, quote(e.EventID))
	return b.String()
}

// quote keeps a value that is not a plain word from breaking the line.
func quote(s string) string {
	if s == "" || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == '"' || r == 0x7f || r > 0x7e }) {
		return fmt.Sprintf("%q", s)
	}
	return s
}

// serveAlertmanager prints an Alertmanager notification, one line per alert,
// as a human would get it from PagerDuty or Slack.
func (s *sink) serveAlertmanager(w http.ResponseWriter, r *http.Request) {
	var n notification
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&n); err != nil || n.Version != "4" {
		s.printf("REJECTED an Alertmanager notification: not a version 4 webhook payload")
		http.Error(w, "not an Alertmanager version 4 notification", http.StatusBadRequest)
		return
	}
	for _, a := range n.Alerts {
		l := a.Labels
		who := ""
		if l["agent_id"] != "" {
			who = " tenant=" + quote(l["tenant"]) + " agent=" + quote(l["agent_id"])
		}
		s.printf("alertmanager %-8s %s%s", a.Status, quote(l["alertname"]), who)
	}
	w.WriteHeader(http.StatusOK)
}

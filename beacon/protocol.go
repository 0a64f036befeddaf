package beacon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Protocol selects the wire protocol spoken to sentinel.
type Protocol string

const (
	// ProtocolBeacon is the Beacon protocol:
	// POST {endpoint}/api/v1/installations/{id}/heartbeat.
	ProtocolBeacon Protocol = "beacon"
	// ProtocolABS is the ABS protocol: POST {endpoint}/v1/heartbeat?agentId={id}.
	// It has no runtime tokens; its answers carry kill-switch commands like
	// the Beacon protocol's.
	ProtocolABS Protocol = "abs"
)

// Status is the health an agent reports about itself.
type Status string

// The statuses of the heartbeat body.
const (
	StatusHealthy   Status = "healthy"
	StatusDegraded  Status = "degraded"
	StatusUnhealthy Status = "unhealthy"
	StatusStarting  Status = "starting"
	// StatusShutdown is the final signal: sentinel marks the agent STOPPED and
	// raises no liveness alert for it.
	StatusShutdown Status = "shutdown"
)

// Valid reports whether s is one of the statuses sentinel understands.
func (s Status) Valid() bool {
	switch s {
	case StatusHealthy, StatusDegraded, StatusUnhealthy, StatusStarting, StatusShutdown:
		return true
	}
	return false
}

// Command is a kill-switch command carried by a heartbeat answer.
type Command string

// The commands sentinel may answer.
const (
	CommandPause     Command = "pause"
	CommandResume    Command = "resume"
	CommandTerminate Command = "terminate"
)

// Heartbeat is the request body of one heartbeat (SPEC 2.1). Every field is
// optional.
type Heartbeat struct {
	Status                   Status  `json:"status,omitempty"`
	UptimeSeconds            int64   `json:"uptime_seconds"`
	HeartbeatIntervalSeconds float64 `json:"heartbeat_interval_seconds,omitempty"`
	// SilentAfter and ZombieAfter are the agent's own thresholds in missed
	// heartbeats; absent, its tenant's apply.
	SilentAfter int       `json:"silent_after,omitempty"`
	ZombieAfter int       `json:"zombie_after,omitempty"`
	Version     string    `json:"version,omitempty"`
	ExitCode    *int      `json:"exit_code,omitempty"`
	Platform    *Platform `json:"platform,omitempty"`
	Metrics     *Metrics  `json:"metrics,omitempty"`
}

// Metrics are the figures an agent reports about its own work.
type Metrics struct {
	RequestsHandled int64   `json:"requests_handled"`
	Errors          int64   `json:"errors"`
	AvgLatencyMs    float64 `json:"avg_latency_ms"`
}

// Token is a runtime token issued by sentinel, bound to one agent.
type Token struct {
	RuntimeToken string    `json:"runtime_token"`
	ExpiresAt    time.Time `json:"expires_at"`
	TokenVersion int       `json:"token_version"`
}

// Response is a heartbeat answer of either protocol, normalised to the Beacon
// protocol's field names: an ABS answer's agentId is InstallationID, its
// status is State and its nextDeadline is NextHeartbeatAt.
type Response struct {
	InstallationID           string    `json:"installation_id"`
	LeaseRenewed             bool      `json:"lease_renewed"`
	State                    string    `json:"state"`
	LeaseExpiresAt           time.Time `json:"lease_expires_at"`
	NextHeartbeatAt          time.Time `json:"next_heartbeat_at"`
	HeartbeatIntervalSeconds float64   `json:"heartbeat_interval_seconds"`
	Command                  Command   `json:"command"`
	RefreshedToken           *Token    `json:"refreshed_token"`

	// Registration (first heartbeat) only.
	Registered           bool    `json:"registered"`
	LeaseDurationSeconds float64 `json:"lease_duration_seconds"`
	RuntimeToken         *Token  `json:"runtime_token"`

	// Kill switch. ShutdownTimeoutMs is nil when the answer names no
	// timeout; an explicit 0 means no grace at all.
	Revoked           bool   `json:"revoked"`
	Reason            string `json:"reason"`
	ShutdownTimeoutMs *int64 `json:"shutdown_timeout_ms"`
}

// absResponse is the ABS answer; its command and revoked fields share the
// Beacon names.
type absResponse struct {
	Status            string    `json:"status"`
	AgentID           string    `json:"agentId"`
	NextDeadline      time.Time `json:"nextDeadline"`
	Command           Command   `json:"command"`
	Revoked           bool      `json:"revoked"`
	Reason            string    `json:"reason"`
	ShutdownTimeoutMs *int64    `json:"shutdown_timeout_ms"`
}

// StatusError is a non-200 answer from sentinel.
type StatusError struct {
	Code    int    // HTTP status code
	Message string // the "error" field of the JSON answer, or the raw body
}

func (e *StatusError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("sentinel answered %d %s", e.Code, http.StatusText(e.Code))
	}
	return fmt.Sprintf("sentinel answered %d %s: %s", e.Code, http.StatusText(e.Code), e.Message)
}

// Retryable reports whether the request is worth retrying soon: transport
// failures, 408, 429 and 5xx are; other 4xx are not (a retry would be answered
// the same until someone fixes the configuration).
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code >= 500 || se.Code == http.StatusTooManyRequests || se.Code == http.StatusRequestTimeout
	}
	return true
}

// maxResponseBytes bounds what is read of an answer.
const maxResponseBytes = 1 << 20

// Client sends single heartbeats. It holds no state between calls and is safe
// for concurrent use; Beacon adds the loop, the token handling and the retries.
type Client struct {
	// Endpoint is sentinel's base URL, e.g. "https://sentinel.example.com".
	Endpoint string
	// AgentID is the installation id (Beacon) or agentId (ABS).
	AgentID string
	// Protocol defaults to ProtocolBeacon.
	Protocol Protocol
	// HTTPClient defaults to http.DefaultClient.
	HTTPClient *http.Client
	// UserAgent is sent as the User-Agent header when set.
	UserAgent string
}

// URL returns the heartbeat URL of c.
func (c *Client) URL() (string, error) {
	base, err := url.Parse(strings.TrimRight(c.Endpoint, "/"))
	if err != nil {
		return "", fmt.Errorf("parse endpoint %q: %w", c.Endpoint, err)
	}
	if base.Scheme != "http" && base.Scheme != "https" {
		return "", fmt.Errorf("endpoint %q: scheme must be http or https", c.Endpoint)
	}
	if base.Host == "" {
		return "", fmt.Errorf("endpoint %q has no host", c.Endpoint)
	}
	switch c.Protocol {
	case ProtocolBeacon, "":
		return base.JoinPath("api/v1/installations", c.AgentID, "heartbeat").String(), nil
	case ProtocolABS:
		u := base.JoinPath("v1/heartbeat")
		u.RawQuery = url.Values{"agentId": {c.AgentID}}.Encode()
		return u.String(), nil
	default:
		return "", fmt.Errorf("unknown protocol %q (want beacon or abs)", c.Protocol)
	}
}

// Send posts one heartbeat with the bearer credential token (a tenant API key
// or an srt_ runtime token) and returns the decoded answer. Any answer other
// than 200 is a *StatusError.
func (c *Client) Send(ctx context.Context, token string, hb Heartbeat) (*Response, error) {
	u, err := c.URL()
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(hb)
	if err != nil {
		return nil, fmt.Errorf("encode heartbeat: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build heartbeat request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		// The URL holds nothing secret, but *url.Error repeats it at length;
		// keep the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("post heartbeat to %s: %w", c.Endpoint, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("read heartbeat answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &StatusError{Code: resp.StatusCode, Message: errorMessage(raw)}
	}
	return decodeResponse(c.Protocol, raw)
}

func decodeResponse(p Protocol, raw []byte) (*Response, error) {
	if p == ProtocolABS {
		var a absResponse
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, fmt.Errorf("decode ABS answer: %w", err)
		}
		return &Response{
			InstallationID:    a.AgentID,
			LeaseRenewed:      !a.Revoked,
			State:             a.Status,
			NextHeartbeatAt:   a.NextDeadline,
			Command:           a.Command,
			Revoked:           a.Revoked || a.Status == "REVOKED",
			Reason:            a.Reason,
			ShutdownTimeoutMs: a.ShutdownTimeoutMs,
		}, nil
	}
	var r Response
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("decode heartbeat answer: %w", err)
	}
	return &r, nil
}

// errorMessage extracts {"error": "..."} or falls back to a short raw body.
func errorMessage(raw []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(raw, &e) == nil && e.Error != "" {
		return e.Error
	}
	s := strings.TrimSpace(string(raw))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

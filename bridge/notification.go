package bridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/prometheus/alertmanager/template"
	"github.com/prometheus/common/model"
)

// Notification is the payload of Alertmanager's webhook_config, version 4.
// It embeds the light template.Data rather than importing notify/webhook,
// which drags in Alertmanager's whole notifier.
type Notification struct {
	template.Data
	Version         string `json:"version"`
	GroupKey        string `json:"groupKey"`
	TruncatedAlerts uint64 `json:"truncatedAlerts"`
}

// Alert statuses of the webhook payload.
const (
	StatusFiring   = "firing"
	StatusResolved = "resolved"
)

// ErrMalformed wraps every reason a payload is refused with 400.
// Alertmanager never retries a 4xx, so only a payload that can never be
// processed may be refused this way.
var ErrMalformed = errors.New("malformed Alertmanager notification")

// maxAlerts bounds a single notification; Alertmanager groups are far
// smaller, and the bound keeps one request's ledger write bounded.
const maxAlerts = 10000

// DecodeNotification parses and checks a webhook payload. Every error wraps
// ErrMalformed and names what is wrong without quoting label values.
func DecodeNotification(body []byte) (*Notification, error) {
	var n Notification
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&n); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrMalformed, jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrMalformed)
	}
	if n.Version != "4" {
		return nil, fmt.Errorf("%w: version must be \"4\" (Alertmanager's webhook_config payload)", ErrMalformed)
	}
	if len(n.Alerts) > maxAlerts {
		return nil, fmt.Errorf("%w: %d alerts, at most %d are accepted in one notification", ErrMalformed, len(n.Alerts), maxAlerts)
	}
	for i, a := range n.Alerts {
		switch a.Status {
		case StatusFiring, StatusResolved:
		default:
			return nil, fmt.Errorf("%w: alerts[%d].status must be firing or resolved", ErrMalformed, i)
		}
		if a.Labels["alertname"] == "" {
			return nil, fmt.Errorf("%w: alerts[%d] has no alertname label", ErrMalformed, i)
		}
		if a.StartsAt.IsZero() {
			return nil, fmt.Errorf("%w: alerts[%d].startsAt is missing", ErrMalformed, i)
		}
	}
	return &n, nil
}

// jsonProblem describes a decoding error without echoing the input.
func jsonProblem(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var parseTime *time.ParseError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("invalid JSON at offset %d", syntax.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %s must be %s", typ.Field, typ.Type)
	case errors.As(err, &parseTime):
		return "a time is not RFC 3339"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "empty or truncated body"
	default:
		return "invalid JSON"
	}
}

// AlertKey is the idempotency key of an alert notification: Alertmanager
// repeats, regroups and re-sends an alert with the same fingerprint,
// startsAt and status, and two clustered Alertmanagers send it twice.
func AlertKey(a template.Alert) string {
	fp := a.Fingerprint
	if fp == "" {
		// Alertmanager always sets it; a hand-made payload may not.
		ls := make(model.LabelSet, len(a.Labels))
		for k, v := range a.Labels {
			ls[model.LabelName(k)] = model.LabelValue(v)
		}
		fp = ls.Fingerprint().String()
	}
	return fp + "|" + a.StartsAt.UTC().Format(time.RFC3339Nano) + "|" + a.Status
}

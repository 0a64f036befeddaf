package ledger

import (
	"encoding/json"
	"strconv"
	"time"
)

// A revoke-all is one change of as many Revoke ops as the tenant has agents
// (100k and more): encoding/json's reflection made its encoding a third of
// the commit. appendJSON writes the very bytes json.Marshal writes for a
// Revoke (TestRevokeJSONIsMarshals holds it to that), without reflection
// for the common case; anything unusual (a string to escape, an event body)
// goes through encoding/json itself.

func (r Revoke) appendJSON(b []byte) ([]byte, error) {
	var err error
	b = append(b, `{"key":{"Tenant":`...)
	b = appendString(b, r.Key.Tenant)
	b = append(b, `,"AgentID":`...)
	b = appendString(b, r.Key.AgentID)
	b = append(b, `},"revocation":{"Reason":`...)
	b = appendString(b, r.Revocation.Reason)
	b = append(b, `,"ShutdownTimeout":`...)
	b = strconv.AppendInt(b, int64(r.Revocation.ShutdownTimeout), 10)
	b = append(b, `,"RevokedAt":`...)
	if b, err = appendTime(b, r.Revocation.RevokedAt); err != nil {
		return nil, err
	}
	b = append(b, `,"Source":`...)
	b = appendString(b, r.Revocation.Source)
	b = append(b, '}')
	if e := r.Event; e != nil {
		b = append(b, `,"event":{"id":`...)
		b = appendString(b, e.ID)
		b = append(b, `,"tenant":`...)
		b = appendString(b, e.Tenant)
		if e.AgentID != "" {
			b = append(b, `,"agent_id":`...)
			b = appendString(b, e.AgentID)
		}
		b = append(b, `,"type":`...)
		b = appendString(b, e.Type)
		b = append(b, `,"sequence":`...)
		b = strconv.AppendUint(b, e.Sequence, 10)
		b = append(b, `,"created_at":`...)
		if b, err = appendTime(b, e.CreatedAt); err != nil {
			return nil, err
		}
		if len(e.Body) > 0 {
			// Validated and compacted exactly as within the struct.
			body, err := json.Marshal(e.Body)
			if err != nil {
				return nil, err
			}
			b = append(b, `,"body":`...)
			b = append(b, body...)
		}
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

// appendString appends s as encoding/json does (HTML characters escaped).
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendTime appends t as its MarshalJSON does, refusing what it refuses.
func appendTime(b []byte, t time.Time) ([]byte, error) {
	q, err := t.MarshalJSON()
	if err != nil {
		return nil, err
	}
	return append(b, q...), nil
}

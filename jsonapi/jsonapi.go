// Package jsonapi holds the few helpers every JSON endpoint of sentinel
// shares, so that errors look the same everywhere (SPEC 2): a JSON body
// {"error": "<message>"} with the fitting status.
package jsonapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strings"
)

// MaxBodyBytes is the largest request body sentinel reads (SPEC 2: 413 above).
const MaxBodyBytes = 64 << 10

// Error writes {"error": msg} with status. A 401 also carries the
// WWW-Authenticate challenge of RFC 6750.
func Error(w http.ResponseWriter, status int, msg string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="sentinel"`)
	}
	body, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	Raw(w, status, body)
}

// Errorf is Error with formatting.
func Errorf(w http.ResponseWriter, status int, format string, args ...any) {
	Error(w, status, fmt.Sprintf(format, args...))
}

// Write encodes v as the JSON answer with status.
func Write(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		Error(w, http.StatusInternalServerError, "encode answer: "+err.Error())
		return
	}
	Raw(w, status, body)
}

// The header values of every answer, shared: Header.Set allocates a fresh
// slice per call, two allocations of every heartbeat. Sharing is safe as
// net/http only reads them, and Header.Add on a full slice copies it.
var (
	contentTypeJSON = []string{"application/json"}
	noStore         = []string{"no-store"}
)

// Raw writes an already encoded JSON body.
func Raw(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = contentTypeJSON
	h["Cache-Control"] = noStore
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

// AllowMethods answers 405 with an Allow header unless r uses one of methods.
func AllowMethods(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	Errorf(w, http.StatusMethodNotAllowed, "method %s not allowed; use %s", r.Method, strings.Join(methods, " or "))
	return false
}

// ReadBody reads at most MaxBodyBytes of r's body into buf (reused when big
// enough). On failure it has already answered 413 or 400 and returns that
// status; it returns 0 on success.
func ReadBody(w http.ResponseWriter, r *http.Request, buf []byte) ([]byte, int) {
	if r.ContentLength > MaxBodyBytes {
		Errorf(w, http.StatusRequestEntityTooLarge, "request body over %d bytes", MaxBodyBytes)
		return nil, http.StatusRequestEntityTooLarge
	}
	body := buf[:0]
	reader := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	for {
		if len(body) == cap(body) {
			body = append(body, 0)[:len(body)]
		}
		n, err := reader.Read(body[len(body):cap(body)])
		body = body[:len(body)+n]
		if err == io.EOF {
			return body, 0
		}
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				Errorf(w, http.StatusRequestEntityTooLarge, "request body over %d bytes", MaxBodyBytes)
				return nil, http.StatusRequestEntityTooLarge
			}
			Errorf(w, http.StatusBadRequest, "read request body: %v", err)
			return nil, http.StatusBadRequest
		}
	}
}

// Decode unmarshals a JSON request body into v, answering 400 on failure.
// An empty body leaves v as it is: every field of sentinel's bodies is optional.
func Decode(w http.ResponseWriter, body []byte, v any) bool {
	if len(bytes.TrimSpace(body)) == 0 {
		return true
	}
	if err := json.Unmarshal(body, v); err != nil {
		Errorf(w, http.StatusBadRequest, "malformed JSON body: %v", err)
		return false
	}
	return true
}

// CanonicalPaths answers 400 to a request whose path is not canonical (a
// "." or ".." segment, "//", a trailing "/") instead of letting
// http.ServeMux redirect it to the cleaned path: a client that follows the
// redirect with its method would act on another resource than it named.
func CanonicalPaths(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if p == "" || p[0] != '/' || (p != "/" && path.Clean(p) != p) {
			Error(w, http.StatusBadRequest, "the path is not canonical (no '.' or '..' segments, '//' or trailing '/'); no redirect is offered")
			return
		}
		h.ServeHTTP(w, r)
	})
}

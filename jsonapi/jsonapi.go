// Package jsonapi holds what every JSON endpoint of sentinel shares, so that
// answers and errors look the same everywhere: a JSON body {"error":
// "<message>"} with the fitting status.
//
// Endpoints return their answer or an error; WriteError is the one place an
// error becomes a status, headers and a body. An *Error carries its status
// and a message meant for the client; any other error is a bug or a failure
// of sentinel itself, answered 500 with a generic message and logged, so
// that an internal error text (a path, a driver message) never reaches a
// client.
package jsonapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MaxBodyBytes is the largest request body sentinel reads (413 above).
const MaxBodyBytes = 64 << 10

// InternalErrorMessage is the body's message of an error that is not an
// *Error: it says nothing of the cause, which is logged instead.
const InternalErrorMessage = "internal error; see the sentinel log"

// Error is an error answered to the client: its status and message, plus
// the headers a few statuses carry. Err, the cause, is never shown to the
// client; it is there for errors.Is and for the log.
type Error struct {
	Status int
	Msg    string
	// Allow lists the methods of a 405 (the Allow header).
	Allow []string
	// RetryAfter, when positive, is sent as Retry-After in whole seconds,
	// rounded up.
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string { return e.Msg }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// BadRequest is a 400: the request is malformed.
func BadRequest(msg string) *Error { return &Error{Status: http.StatusBadRequest, Msg: msg} }

// Unauthorized is a 401: no credential, or one sentinel does not know. Its
// answer carries the WWW-Authenticate challenge of RFC 6750.
func Unauthorized(msg string) *Error { return &Error{Status: http.StatusUnauthorized, Msg: msg} }

// Forbidden is a 403: a known credential that may not do this.
func Forbidden(msg string) *Error { return &Error{Status: http.StatusForbidden, Msg: msg} }

// NotFound is a 404.
func NotFound(msg string) *Error { return &Error{Status: http.StatusNotFound, Msg: msg} }

// MethodNotAllowed is the 405 of a request with method; its answer lists
// allow in the Allow header.
func MethodNotAllowed(method string, allow ...string) *Error {
	return &Error{
		Status: http.StatusMethodNotAllowed,
		Msg:    fmt.Sprintf("method %s not allowed; use %s", method, strings.Join(allow, " or ")),
		// A copy, so that the caller's variadic slice does not escape on
		// the success path of CheckMethod.
		Allow: slices.Clone(allow),
	}
}

// TooLarge is the 413 of a body over MaxBodyBytes.
func TooLarge() *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("request body over %d bytes", MaxBodyBytes)}
}

// Unprocessable is a 422: well-formed, but a value sentinel does not support.
func Unprocessable(msg string) *Error {
	return &Error{Status: http.StatusUnprocessableEntity, Msg: msg}
}

// TooMany is a 429; the client may ask again after retryAfter.
func TooMany(msg string, retryAfter time.Duration) *Error {
	return &Error{Status: http.StatusTooManyRequests, Msg: msg, RetryAfter: retryAfter}
}

// Unavailable is a 503: sentinel cannot do it now, and a retry may succeed
// (after retryAfter when positive). cause is kept for errors.Is, never
// answered.
func Unavailable(msg string, retryAfter time.Duration, cause error) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Msg: msg, RetryAfter: retryAfter, Err: cause}
}

// Internal is a 500 whose message is fit for the client; cause is kept for
// errors.Is, never answered. An error that is not an *Error is a 500 too,
// with a generic message.
func Internal(msg string, cause error) *Error {
	return &Error{Status: http.StatusInternalServerError, Msg: msg, Err: cause}
}

// WriteError answers err: an *Error (anywhere in err's chain) with its
// status, headers and message; any other error, which sentinel did not
// expect, with a 500 and InternalErrorMessage, logging err on logger (which
// may be nil). An *Error is not logged: whoever made it knows whether its
// cause deserves a log line, and with what context.
func WriteError(w http.ResponseWriter, logger *slog.Logger, err error) {
	var e *Error
	if !errors.As(err, &e) {
		if logger != nil {
			logger.Error("internal error answering a request", "err", err)
		}
		e = &Error{Status: http.StatusInternalServerError, Msg: InternalErrorMessage}
	}
	h := w.Header()
	switch {
	case e.Status == http.StatusUnauthorized:
		h.Set("WWW-Authenticate", `Bearer realm="sentinel"`)
	case e.Status == http.StatusMethodNotAllowed && len(e.Allow) > 0:
		h.Set("Allow", strings.Join(e.Allow, ", "))
	}
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.FormatInt(int64(math.Ceil(e.RetryAfter.Seconds())), 10))
	}
	body, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{e.Msg})
	Raw(w, e.Status, body)
}

// Response is an answer with a status other than 200.
type Response struct {
	Status int
	Body   any
}

// Func is an endpoint: it returns the answer's body (encoded as JSON; a
// Response for another status than 200) or an error for WriteError. It
// writes nothing itself.
type Func func(r *http.Request) (any, error)

// Handle adapts f to an http.Handler; logger receives the errors that are
// not an *Error.
func Handle(logger *slog.Logger, f Func) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := f(r)
		if err != nil {
			WriteError(w, logger, err)
			return
		}
		if res, ok := v.(Response); ok {
			Write(w, res.Status, res.Body)
			return
		}
		Write(w, http.StatusOK, v)
	})
}

// Write encodes v as the JSON answer with status.
func Write(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		WriteError(w, nil, Internal("encode answer: "+err.Error(), err))
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

// CheckMethod returns a 405 *Error unless r uses one of methods.
func CheckMethod(r *http.Request, methods ...string) error {
	for _, m := range methods {
		if r.Method == m {
			return nil
		}
	}
	return MethodNotAllowed(r.Method, methods...)
}

// ReadBody reads at most MaxBodyBytes of r's body into buf (reused when big
// enough), or returns a 413 or 400 *Error. w, when not nil, is only told to
// close the connection after a body over the limit; nothing is written to it.
func ReadBody(w http.ResponseWriter, r *http.Request, buf []byte) ([]byte, error) {
	if r.ContentLength > MaxBodyBytes {
		return nil, TooLarge()
	}
	body := buf[:0]
	// A body of a declared length within the limit does not exceed it:
	// net/http stops at the length. A body of unknown length (chunked) is
	// counted by http.MaxBytesReader, which also has the connection closed
	// after it; the count below only guards against a Body that ignores
	// its declared length (one a middleware put there), without the
	// reader's allocation for every request.
	reader := r.Body
	if r.ContentLength < 0 {
		reader = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	}
	for {
		if len(body) == cap(body) {
			body = append(body, 0)[:len(body)]
		}
		n, err := reader.Read(body[len(body):cap(body)])
		body = body[:len(body)+n]
		if len(body) > MaxBodyBytes {
			return nil, TooLarge()
		}
		if err == io.EOF {
			return body, nil
		}
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				return nil, TooLarge()
			}
			return nil, BadRequest("read request body: " + err.Error())
		}
	}
}

// Decode unmarshals a JSON request body into v, or returns a 400 *Error.
// An empty body leaves v as it is: every field of sentinel's bodies is optional.
func Decode(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return BadRequest("malformed JSON body: " + err.Error())
	}
	return nil
}

// CanonicalPaths answers 400 to a request whose path is not canonical (a
// "." or ".." segment, "//", a trailing "/") instead of letting
// http.ServeMux redirect it to the cleaned path: a client that follows the
// redirect with its method would act on another resource than it named.
func CanonicalPaths(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if p == "" || p[0] != '/' || (p != "/" && path.Clean(p) != p) {
			WriteError(w, nil, BadRequest("the path is not canonical (no '.' or '..' segments, '//' or trailing '/'); no redirect is offered"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

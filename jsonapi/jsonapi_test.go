package jsonapi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestWriteError(t *testing.T) {
	cause := errors.New("pq: connection refused to 10.0.0.7 password=hunter2")
	tests := []struct {
		name    string
		err     error
		status  int
		body    string
		headers map[string]string // every header besides Content-Type and Cache-Control; "" is absent
		logged  bool
	}{
		{"bad request", BadRequest("bad input"), http.StatusBadRequest, `{"error":"bad input"}`, nil, false},
		{"unauthorized", Unauthorized("missing bearer credential"), http.StatusUnauthorized, `{"error":"missing bearer credential"}`,
			map[string]string{"WWW-Authenticate": `Bearer realm="sentinel"`}, false},
		{"forbidden", Forbidden("nope"), http.StatusForbidden, `{"error":"nope"}`, nil, false},
		{"not found", NotFound(`agent "a-1" not found`), http.StatusNotFound, `{"error":"agent \"a-1\" not found"}`, nil, false},
		{"method not allowed", MethodNotAllowed(http.MethodPut, http.MethodGet, http.MethodDelete), http.StatusMethodNotAllowed,
			`{"error":"method PUT not allowed; use GET or DELETE"}`, map[string]string{"Allow": "GET, DELETE"}, false},
		{"too large", TooLarge(), http.StatusRequestEntityTooLarge, `{"error":"request body over 65536 bytes"}`, nil, false},
		{"escaped", BadRequest(`quote " and <tag> & \ backslash`), http.StatusBadRequest,
			`{"error":"quote \" and \u003ctag\u003e \u0026 \\ backslash"}`, nil, false},
		{"unprocessable", Unprocessable(`unsupported command "x"`), http.StatusUnprocessableEntity, `{"error":"unsupported command \"x\""}`, nil, false},
		{"too many", TooMany("agent limit reached", 1500*time.Millisecond), http.StatusTooManyRequests, `{"error":"agent limit reached"}`,
			map[string]string{"Retry-After": "2"}, false},
		{"unavailable", Unavailable("cannot persist; retry", 5*time.Second, cause), http.StatusServiceUnavailable, `{"error":"cannot persist; retry"}`,
			map[string]string{"Retry-After": "5"}, false},
		{"unavailable without retry-after", Unavailable("", 0, nil), http.StatusServiceUnavailable, `{"error":""}`, nil, false},
		{"internal with a message", Internal("cannot build the test event", cause), http.StatusInternalServerError,
			`{"error":"cannot build the test event"}`, nil, false},
		{"wrapped", fmt.Errorf("serve: %w", Forbidden("nope")), http.StatusForbidden, `{"error":"nope"}`, nil, false},
		// Anything else is a failure of sentinel: a 500 that says nothing of it.
		{"unknown", cause, http.StatusInternalServerError, `{"error":"` + InternalErrorMessage + `"}`, nil, true},
		{"unknown wrapped", fmt.Errorf("commit: %w", cause), http.StatusInternalServerError, `{"error":"` + InternalErrorMessage + `"}`, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log bytes.Buffer
			w := httptest.NewRecorder()
			WriteError(w, slog.New(slog.NewTextHandler(&log, nil)), tt.err)
			require.Equal(t, tt.status, w.Code)
			require.Equal(t, "application/json", w.Header().Get("Content-Type"))
			require.Equal(t, "no-store", w.Header().Get("Cache-Control"))
			require.Equal(t, tt.body+"\n", w.Body.String())
			for _, h := range []string{"WWW-Authenticate", "Allow", "Retry-After"} {
				require.Equal(t, tt.headers[h], w.Header().Get(h), h)
			}
			require.NotContains(t, w.Body.String(), "hunter2")
			require.NotContains(t, w.Body.String(), "10.0.0.7")
			if tt.logged {
				require.Contains(t, log.String(), "connection refused", "an unexpected error is logged")
			} else {
				require.Empty(t, log.String())
			}
		})
	}
}

// TestWriteErrorNilLogger: an unknown error without a logger is still a 500.
func TestWriteErrorNilLogger(t *testing.T) {
	w := httptest.NewRecorder()
	WriteError(w, nil, errors.New("disk on fire"))
	require.Equal(t, http.StatusInternalServerError, w.Code)
	require.NotContains(t, w.Body.String(), "disk")
}

func TestHandle(t *testing.T) {
	tests := []struct {
		name   string
		f      Func
		status int
		body   string
	}{
		{"ok", func(*http.Request) (any, error) { return map[string]int{"a": 1}, nil }, http.StatusOK, `{"a":1}`},
		{"accepted", func(*http.Request) (any, error) {
			return Response{Status: http.StatusAccepted, Body: map[string]string{"status": "pending"}}, nil
		}, http.StatusAccepted, `{"status":"pending"}`},
		{"typed error", func(*http.Request) (any, error) { return nil, NotFound("no such thing") }, http.StatusNotFound, `{"error":"no such thing"}`},
		{"unknown error", func(*http.Request) (any, error) { return nil, errors.New("secret detail") }, http.StatusInternalServerError,
			`{"error":"` + InternalErrorMessage + `"}`},
		{"method", func(r *http.Request) (any, error) { return nil, CheckMethod(r, http.MethodPost) }, http.StatusMethodNotAllowed,
			`{"error":"method GET not allowed; use POST"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			Handle(slog.New(slog.DiscardHandler), tt.f).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/x", nil))
			require.Equal(t, tt.status, w.Code)
			require.Equal(t, "application/json", w.Header().Get("Content-Type"))
			require.Equal(t, tt.body+"\n", w.Body.String())
		})
	}
}

func TestWrite(t *testing.T) {
	w := httptest.NewRecorder()
	Write(w, http.StatusOK, map[string]any{"a": 1, "b": nil})
	require.Equal(t, http.StatusOK, w.Code)
	require.Equal(t, "application/json", w.Header().Get("Content-Type"))
	require.Equal(t, `{"a":1,"b":null}`+"\n", w.Body.String())

	// A value that cannot be encoded is a 500 in the error shape.
	w = httptest.NewRecorder()
	Write(w, http.StatusOK, math.Inf(1))
	require.Equal(t, http.StatusInternalServerError, w.Code)
	require.Contains(t, w.Body.String(), `"error":"encode answer: `)
}

func TestRaw(t *testing.T) {
	w := httptest.NewRecorder()
	Raw(w, http.StatusCreated, []byte(`{"x":true}`))
	require.Equal(t, http.StatusCreated, w.Code)
	require.Equal(t, "application/json", w.Header().Get("Content-Type"))
	require.Equal(t, `{"x":true}`+"\n", w.Body.String())
}

func TestCheckMethod(t *testing.T) {
	tests := []struct {
		method  string
		allowed []string
		ok      bool
		allow   string
		msg     string
	}{
		{http.MethodPost, []string{http.MethodPost}, true, "", ""},
		{http.MethodDelete, []string{http.MethodGet, http.MethodDelete}, true, "", ""},
		{http.MethodGet, []string{http.MethodPost}, false, "POST", "method GET not allowed; use POST"},
		{http.MethodPut, []string{http.MethodGet, http.MethodDelete}, false, "GET, DELETE", "method PUT not allowed; use GET or DELETE"},
		{"post", []string{http.MethodPost}, false, "POST", "method post not allowed; use POST"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+strings.Join(tt.allowed, ","), func(t *testing.T) {
			err := CheckMethod(httptest.NewRequest(tt.method, "/x", nil), tt.allowed...)
			if tt.ok {
				require.NoError(t, err)
				return
			}
			w := httptest.NewRecorder()
			WriteError(w, nil, err)
			require.Equal(t, http.StatusMethodNotAllowed, w.Code)
			require.Equal(t, tt.allow, w.Header().Get("Allow"))
			require.Equal(t, "application/json", w.Header().Get("Content-Type"))
			require.JSONEq(t, `{"error":"`+tt.msg+`"}`, w.Body.String())
		})
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestReadBody(t *testing.T) {
	at := strings.Repeat("x", MaxBodyBytes)
	over := at + "y"
	tests := []struct {
		name   string
		body   io.Reader
		length int64 // Content-Length; -1 unknown (chunked)
		status int
		want   string
	}{
		{"empty", strings.NewReader(""), 0, 0, ""},
		{"small", strings.NewReader(`{"a":1}`), 7, 0, `{"a":1}`},
		{"small chunked", strings.NewReader(`{"a":1}`), -1, 0, `{"a":1}`},
		{"at the limit", strings.NewReader(at), MaxBodyBytes, 0, at},
		{"at the limit chunked", strings.NewReader(at), -1, 0, at},
		{"over the limit", strings.NewReader(over), MaxBodyBytes + 1, http.StatusRequestEntityTooLarge, ""},
		{"over the limit chunked", strings.NewReader(over), -1, http.StatusRequestEntityTooLarge, ""},
		{"far over the limit chunked", strings.NewReader(strings.Repeat(over, 4)), -1, http.StatusRequestEntityTooLarge, ""},
		// A lying Content-Length under the limit does not get more through.
		{"understated length", strings.NewReader(over), 10, http.StatusRequestEntityTooLarge, ""},
		{"read error", failingReader{}, -1, http.StatusBadRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", tt.body)
			r.ContentLength = tt.length
			w := httptest.NewRecorder()
			got, err := ReadBody(w, r, nil)
			require.Zero(t, w.Body.Len(), "ReadBody answers nothing itself")
			if tt.status == 0 {
				require.NoError(t, err)
				require.Equal(t, tt.want, string(got))
				return
			}
			require.Nil(t, got)
			WriteError(w, nil, err)
			status := tt.status
			require.Equal(t, status, w.Code)
			require.Equal(t, "application/json", w.Header().Get("Content-Type"))
			if status == http.StatusRequestEntityTooLarge {
				require.JSONEq(t, `{"error":"request body over 65536 bytes"}`, w.Body.String())
			} else {
				require.Contains(t, w.Body.String(), `"error":"read request body: connection reset"`)
			}
		})
	}
}

// TestReadBodyContentLengthNotRead: a declared length over the limit is
// refused without reading the body.
func TestReadBodyContentLengthNotRead(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "/", failingReader{})
	r.ContentLength = MaxBodyBytes + 1
	w := httptest.NewRecorder()
	_, err := ReadBody(w, r, nil)
	var e *Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, http.StatusRequestEntityTooLarge, e.Status)
}

// TestReadBodyReusesBuffer: a buffer big enough is used as is.
func TestReadBodyReusesBuffer(t *testing.T) {
	buf := make([]byte, 0, 1024)
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{"status":"healthy"}`))
	got, err := ReadBody(httptest.NewRecorder(), r, buf)
	require.NoError(t, err)
	require.Equal(t, `{"status":"healthy"}`, string(got))
	require.Same(t, &buf[:1][0], &got[0])

	// A small buffer grows; its old content does not leak into the body.
	small := []byte("garbage")
	r = httptest.NewRequest(http.MethodPost, "/", strings.NewReader(strings.Repeat("z", 5000)))
	got, err = ReadBody(httptest.NewRecorder(), r, small[:0])
	require.NoError(t, err)
	require.Equal(t, strings.Repeat("z", 5000), string(got))
}

func TestDecode(t *testing.T) {
	type target struct {
		A int    `json:"a"`
		B string `json:"b"`
	}
	tests := []struct {
		name string
		body string
		ok   bool
		want target
	}{
		{"empty keeps the value", "", true, target{A: 7}},
		{"blank keeps the value", " \n\t ", true, target{A: 7}},
		{"object", `{"a":1,"b":"x"}`, true, target{A: 1, B: "x"}},
		{"unknown fields ignored", `{"b":"y","c":[1]}`, true, target{A: 7, B: "y"}},
		{"malformed", `{"a":`, false, target{}},
		{"wrong type", `{"a":"1"}`, false, target{}},
		{"trailing garbage", `{"a":1} x`, false, target{}},
		{"array", `[1]`, false, target{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := target{A: 7}
			err := Decode([]byte(tt.body), &v)
			if tt.ok {
				require.NoError(t, err)
				require.Equal(t, tt.want, v)
				return
			}
			w := httptest.NewRecorder()
			WriteError(w, nil, err)
			require.Equal(t, http.StatusBadRequest, w.Code)
			require.True(t, bytes.HasPrefix(w.Body.Bytes(), []byte(`{"error":"malformed JSON body: `)), w.Body.String())
		})
	}
}

func TestCanonicalPaths(t *testing.T) {
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	h := CanonicalPaths(next)
	for _, tc := range []struct {
		path   string
		status int
	}{
		{"/", http.StatusTeapot},
		{"/api/v1/installations/a1", http.StatusTeapot},
		{"/api/v1/installations/a1.b..c", http.StatusTeapot}, // dots inside a segment are fine
		{"/api/v1/installations/a1/revoke/..", http.StatusBadRequest},
		{"/api/v1/installations/./a1", http.StatusBadRequest},
		{"/api/v1/installations/a1/", http.StatusBadRequest},
		{"//api", http.StatusBadRequest},
		{"/a/%2e%2e/b", http.StatusBadRequest},
	} {
		t.Run(tc.path, func(t *testing.T) {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(http.MethodDelete, tc.path, nil))
			require.Equal(t, tc.status, w.Code)
			require.Empty(t, w.Header().Get("Location"))
			if tc.status == http.StatusBadRequest {
				require.JSONEq(t, `{"error":"the path is not canonical (no '.' or '..' segments, '//' or trailing '/'); no redirect is offered"}`, w.Body.String())
			}
		})
	}
}

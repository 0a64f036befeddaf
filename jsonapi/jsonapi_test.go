package jsonapi

import (
	"bytes"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestError(t *testing.T) {
	tests := []struct {
		status    int
		msg       string
		body      string
		challenge bool
	}{
		{http.StatusBadRequest, "bad input", `{"error":"bad input"}` + "\n", false},
		{http.StatusUnauthorized, "missing bearer credential", `{"error":"missing bearer credential"}` + "\n", true},
		{http.StatusForbidden, "nope", `{"error":"nope"}` + "\n", false},
		{http.StatusRequestEntityTooLarge, `quote " and <tag> & \ backslash`, `{"error":"quote \" and \u003ctag\u003e \u0026 \\ backslash"}` + "\n", false},
		{http.StatusServiceUnavailable, "", `{"error":""}` + "\n", false},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			w := httptest.NewRecorder()
			Error(w, tt.status, tt.msg)
			require.Equal(t, tt.status, w.Code)
			require.Equal(t, "application/json", w.Header().Get("Content-Type"))
			require.Equal(t, "no-store", w.Header().Get("Cache-Control"))
			require.Equal(t, tt.body, w.Body.String())
			if tt.challenge {
				require.True(t, strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer "), w.Header().Get("WWW-Authenticate"))
			} else {
				require.Empty(t, w.Header().Get("WWW-Authenticate"))
			}
		})
	}
}

func TestErrorf(t *testing.T) {
	w := httptest.NewRecorder()
	Errorf(w, http.StatusNotFound, "agent %q not found", "a-1")
	require.Equal(t, http.StatusNotFound, w.Code)
	require.JSONEq(t, `{"error":"agent \"a-1\" not found"}`, w.Body.String())
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

func TestAllowMethods(t *testing.T) {
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
			w := httptest.NewRecorder()
			ok := AllowMethods(w, httptest.NewRequest(tt.method, "/x", nil), tt.allowed...)
			require.Equal(t, tt.ok, ok)
			if tt.ok {
				require.Empty(t, w.Header().Get("Allow"))
				require.Zero(t, w.Body.Len(), "nothing written")
				return
			}
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
			got, status := ReadBody(w, r, nil)
			require.Equal(t, tt.status, status)
			if status == 0 {
				require.Equal(t, tt.want, string(got))
				require.Zero(t, w.Body.Len(), "nothing answered on success")
				return
			}
			require.Nil(t, got)
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
	_, status := ReadBody(w, r, nil)
	require.Equal(t, http.StatusRequestEntityTooLarge, status)
}

// TestReadBodyReusesBuffer: a buffer big enough is used as is.
func TestReadBodyReusesBuffer(t *testing.T) {
	buf := make([]byte, 0, 1024)
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{"status":"healthy"}`))
	got, status := ReadBody(httptest.NewRecorder(), r, buf)
	require.Zero(t, status)
	require.Equal(t, `{"status":"healthy"}`, string(got))
	require.Same(t, &buf[:1][0], &got[0])

	// A small buffer grows; its old content does not leak into the body.
	small := []byte("garbage")
	r = httptest.NewRequest(http.MethodPost, "/", strings.NewReader(strings.Repeat("z", 5000)))
	got, status = ReadBody(httptest.NewRecorder(), r, small[:0])
	require.Zero(t, status)
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
			w := httptest.NewRecorder()
			ok := Decode(w, []byte(tt.body), &v)
			require.Equal(t, tt.ok, ok)
			if tt.ok {
				require.Equal(t, tt.want, v)
				require.Zero(t, w.Body.Len())
				return
			}
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

package app

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v3"

	"github.com/agentsentinel/sentinel/config"
)

// webConfig is the --web.config.file as sentinel serves it: exporter-
// toolkit's format (web.Config), read once at start. The certificate, key
// and CA files it names are read again on every TLS handshake, so a rotated
// certificate is served without a restart; the rest of the file (headers,
// rate limit, TLS settings) takes effect at the next start. A webConfig is
// immutable once loaded and safe for concurrent use.
type webConfig struct {
	// file is the path given to --web.config.file; "" serves plain HTTP
	// with no headers and no rate limit.
	file string
	// tls is the tls_server_config with its relative paths resolved; nil
	// when the file does not enable TLS.
	tls *web.TLSConfig
	// headers are http_server_config.headers, set on every answer.
	headers map[string]string
	// rate is rate_limit; a zero Interval is no limit.
	rate web.RateLimiterConfig
	// redact cuts the file's values out of a message.
	redact func(string) string
}

// CheckWebConfig validates the web configuration file (--web.config.file;
// "" is none) as Run would serve it: exporter-toolkit's checks, the
// certificate and key loaded, and sentinel's own rules (no basic_auth_users,
// a usable rate_limit). Its errors name the file and the key, never a value
// of the file.
func CheckWebConfig(file string) error {
	_, err := loadWebConfig(file)
	return err
}

func loadWebConfig(file string) (*webConfig, error) {
	if file == "" {
		return &webConfig{redact: func(s string) string { return s }}, nil
	}
	content, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read web config %s: %w", file, err)
	}
	wc, err := parseWebConfig(content, file)
	if err != nil {
		return nil, fmt.Errorf("web config %s: %w", file, err)
	}
	return wc, nil
}

// parseWebConfig decodes and validates content, the web configuration file
// at file. Errors from the decoder and from exporter-toolkit go through
// webRedactor: they name lines and keys, not values.
func parseWebConfig(content []byte, file string) (*webConfig, error) {
	redact := webRedactor(content, filepath.Dir(file))
	// exporter-toolkit's defaults, which the decoder overwrites with what
	// the file sets.
	c := web.Config{
		TLSConfig:  web.TLSConfig{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13},
		HTTPConfig: web.HTTPConfig{HTTP2: true},
	}
	dec := yaml.NewDecoder(bytes.NewReader(content))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) { // an empty file is plain HTTP, as for exporter-toolkit
		return nil, errors.New(redact(err.Error()))
	}
	// A second document would be ignored silently; empty ones (a trailing
	// "---") are harmless.
	for {
		var extra yaml.Node
		err := dec.Decode(&extra)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil || len(extra.Content) > 0 && extra.Content[0].Tag != "!!null" {
			return nil, errors.New("a second YAML document follows the web configuration (one document only)")
		}
	}
	// Agents and admins send their credentials as "Authorization: Bearer";
	// basic auth takes the same header and would refuse every one of them.
	if len(c.Users) > 0 {
		return nil, errors.New("basic_auth_users is not supported: agents and admins send bearer credentials in the Authorization header basic auth would take; use client certificates (tls_server_config.client_auth_type) or a proxy")
	}
	switch r := c.RateLimiterConfig; {
	case r.Interval < 0:
		return nil, errors.New("rate_limit.interval must not be negative")
	case r.Interval > 0 && r.Burst < 1:
		return nil, errors.New("rate_limit.burst must be at least 1 with rate_limit.interval set (0 would refuse every request)")
	case r.Interval == 0 && r.Burst != 0:
		return nil, errors.New("rate_limit.burst is set without rate_limit.interval")
	}
	// exporter-toolkit's own checks: allowed headers and their values, the
	// TLS settings, the certificate, key and CA files loaded.
	if err := web.Validate(file); err != nil {
		return nil, errors.New(redact(err.Error()))
	}
	for name, v := range c.HTTPConfig.Header {
		// The headers are also written raw into the answers net/http
		// writes itself (serverConn): no line breaks. The name is one
		// of exporter-toolkit's few, checked above.
		if strings.ContainsAny(v, "\r\n\x00") {
			return nil, fmt.Errorf("http_server_config.headers.%s: the value holds a line break or NUL", name)
		}
	}
	wc := &webConfig{file: file, headers: c.HTTPConfig.Header, rate: c.RateLimiterConfig, redact: redact}
	if c.TLSConfig.IsEnabled() {
		c.TLSConfig.SetDirectory(filepath.Dir(file))
		wc.tls = &c.TLSConfig
	}
	return wc, nil
}

// tlsConfig returns the server's TLS configuration, nil for plain HTTP.
// Every handshake loads the certificate, key and CA files again
// (GetConfigForClient); when that fails the handshake fails, and onError
// is called with the redacted reason. Only HTTP/1.1 is offered: sentinel
// serves TLS connections through its own listener (listen.go), and net/http
// speaks HTTP/2 only on a *tls.Conn it terminates itself.
func (wc *webConfig) tlsConfig(onError func(error)) (*tls.Config, error) {
	if wc.tls == nil {
		return nil, nil
	}
	base, err := web.ConfigToTLSConfig(wc.tls)
	if err != nil {
		return nil, errors.New(wc.redact(err.Error()))
	}
	base.NextProtos = []string{"http/1.1"}
	tc := *wc.tls
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c, err := web.ConfigToTLSConfig(&tc)
		if err != nil {
			err = errors.New(wc.redact(err.Error()))
			onError(err)
			return nil, err
		}
		onError(nil)
		c.NextProtos = []string{"http/1.1"}
		return c, nil
	}
	return base, nil
}

// webKeys are the keys of exporter-toolkit's web configuration and the
// names of the headers it allows: the only scalars of the file a message
// may show.
var webKeys = func() map[string]bool {
	keys := map[string]bool{
		"Strict-Transport-Security": true, "X-Content-Type-Options": true, "X-Frame-Options": true,
		"X-XSS-Protection": true, "Content-Security-Policy": true,
	}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return
		}
		for f := range t.Fields() {
			if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name != "" && name != "-" {
				keys[name] = true
			}
			walk(f.Type)
		}
	}
	walk(reflect.TypeFor[web.Config]())
	return keys
}()

var (
	// yamlTags are YAML's own tags, which messages may show.
	yamlTags = map[string]bool{"!!str": true, "!!int": true, "!!float": true, "!!bool": true, "!!null": true,
		"!!map": true, "!!seq": true, "!!binary": true, "!!timestamp": true, "!!merge": true}
	// typeErrorValue matches yaml's "cannot unmarshal TAG `VALUE` into
	// TYPE", whose VALUE may be cut short (so the safety net below would
	// miss it).
	typeErrorValue = regexp.MustCompile("(cannot unmarshal [^ ]+) `.*` (into [^`]*)$")
	// anchorName matches yaml's "unknown anchor 'NAME' referenced", a
	// parse error: the safety net never saw the document that has it.
	anchorName = regexp.MustCompile(`anchor '.*?'`)
)

// webRedactor returns a func that removes every value of the web
// configuration content from a message: yaml's type errors lose their
// quoted value, then every scalar, tag and anchor of the file that is not
// a key of the format (a value, or an unknown key that may be a secret
// pasted in the wrong place) is cut out, longest first. The file holds no
// secret sentinel needs (basic_auth_users is refused), but an inline
// private key or a password pasted by mistake must not reach a log line.
// Values are also cut as the file paths they may be, resolved against dir
// as exporter-toolkit resolves them.
func webRedactor(content []byte, dir string) func(string) string {
	values := config.YAMLWords(content, func(n *yaml.Node, add func(string)) {
		// Tags and anchors are the file's words too: yaml quotes them in
		// its type errors.
		for _, w := range []string{n.Tag, n.Anchor} {
			if len(w) >= 3 && !yamlTags[w] {
				add(w)
			}
		}
		if n.Kind != yaml.ScalarNode || len(n.Value) < 3 || webKeys[n.Value] {
			return
		}
		add(n.Value)
		if q := strconv.Quote(n.Value); q[1:len(q)-1] != n.Value {
			add(q[1 : len(q)-1]) // messages quote Go-style too
		}
		if p := filepath.Join(dir, n.Value); !filepath.IsAbs(n.Value) && len(p) >= 3 {
			add(p)
		}
		// Multi-line values (inline PEM) are also cut line by line.
		for l := range strings.Lines(n.Value) {
			if l = strings.TrimSpace(l); len(l) >= 3 && !webKeys[l] {
				add(l)
			}
		}
	})
	return func(msg string) string {
		lines := strings.Split(msg, "\n")
		for i, l := range lines {
			l = typeErrorValue.ReplaceAllString(l, "$1 $2")
			lines[i] = anchorName.ReplaceAllString(l, "anchor "+config.Redacted)
		}
		msg = strings.Join(lines, "\n")
		for _, v := range values {
			msg = strings.ReplaceAll(msg, v, config.Redacted)
		}
		return msg
	}
}

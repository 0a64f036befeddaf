package config

import (
	"bytes"
	"errors"
	"io/fs"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

// Redacted replaces whatever was cut out of an error message.
const Redacted = "<redacted>"

// minRedactLen is the shortest value the safety net cuts out of messages:
// shorter ones cannot be secrets worth the name, and cutting them would
// mangle line numbers and words.
const minRedactLen = 3

var (
	// typeErrorValue matches yaml's "line N: cannot unmarshal TAG `VALUE`
	// into TYPE", VALUE being the first characters of the offending scalar:
	// greedy up to the last "` into ", as VALUE may itself hold backquotes.
	typeErrorValue = regexp.MustCompile("(?s)^(line [0-9]+: cannot unmarshal [^ ]+) `.*` (into [^`]*)$")
	// unknownField matches yaml's "line N: field NAME not found in type T":
	// NAME may be a secret pasted where a key was expected.
	unknownField = regexp.MustCompile(`(?s)^(line [0-9]+): field (.*) not found in type ([^ ]+)$`)
)

// redact removes every value of the configuration from err's message.
//
// Two layers: messages whose shape is known (yaml's type and unknown-field
// errors) are rewritten to name the line, the field and the type only; then,
// as a safety net for every other message (those of prometheus/common's
// HTTP client config, of a URL parser, of a second document), every scalar
// of the file that is not a key of the configuration's schema is cut out.
// A yaml.TypeError stays a yaml.TypeError.
func redact(err error, content []byte) error {
	values := scalarValues(content)
	clean := func(msg string) string {
		switch {
		case typeErrorValue.MatchString(msg):
			msg = typeErrorValue.ReplaceAllString(msg, "$1 "+Redacted+" $2")
		case unknownField.MatchString(msg):
			m := unknownField.FindStringSubmatch(msg)
			msg = m[1] + ": unknown field in type " + m[3] + " (name not shown: it may be a secret)"
			if hint := suggestField(m[2], m[3]); hint != "" {
				msg += "; did you mean " + hint + "?"
			}
		case strings.Contains(msg, "`"):
			// Another yaml message quoting a value: keep the line only.
			line, _, _ := strings.Cut(msg, ":")
			if !strings.HasPrefix(line, "line ") {
				line = "unknown line"
			}
			msg = line + ": " + Redacted
		}
		for _, v := range values {
			msg = strings.ReplaceAll(msg, v, Redacted)
		}
		return msg
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, len(te.Errors))
		for i, m := range te.Errors {
			msgs[i] = clean(m)
		}
		return &yaml.TypeError{Errors: msgs}
	}
	return &redactedError{msg: clean(err.Error()), notExist: errors.Is(err, fs.ErrNotExist)}
}

// redactedError is an error whose message had the configuration's values
// cut out. It deliberately does not unwrap to the original error, whose
// message still holds them; it only keeps whether a file was missing.
type redactedError struct {
	msg      string
	notExist bool
}

func (e *redactedError) Error() string { return e.msg }

// Is keeps errors.Is(err, fs.ErrNotExist) working for a missing secret file.
func (e *redactedError) Is(target error) bool { return e.notExist && target == fs.ErrNotExist }

// scalarValues returns every scalar of every document in content that is
// not a key of the schema, longest first, so that a value containing
// another is cut out whole.
func scalarValues(content []byte) []string {
	keys := schemaKeys()
	return YAMLWords(content, func(n *yaml.Node, add func(string)) {
		if n.Kind == yaml.ScalarNode && len(n.Value) >= minRedactLen && !keys.names[n.Value] {
			add(n.Value)
			// Messages also quote values Go-style (%q), escaping what
			// is not printable.
			if q := strconv.Quote(n.Value); q[1:len(q)-1] != n.Value {
				add(q[1 : len(q)-1])
			}
		}
	})
}

// YAMLWords walks every node of every document in content (aliases
// followed) and returns the words pick adds for them, each once, longest
// first, so that a word containing another is cut out of a message whole.
// A broken document ends the walk: its earlier nodes were walked, and what
// the parser never reached cannot be in its messages either, except in a
// syntax error, which quotes no values.
func YAMLWords(content []byte, pick func(n *yaml.Node, add func(string))) []string {
	seen := map[string]bool{}
	add := func(w string) { seen[w] = true }
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n == nil {
			return
		}
		pick(n, add)
		for _, c := range n.Content {
			walk(c)
		}
		walk(n.Alias)
	}
	dec := yaml.NewDecoder(bytes.NewReader(content))
	for {
		var doc yaml.Node
		if err := dec.Decode(&doc); err != nil {
			break
		}
		walk(&doc)
	}
	words := make([]string, 0, len(seen))
	for w := range seen {
		words = append(words, w)
	}
	slices.SortFunc(words, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	return words
}

// schema is what the configuration's types accept as keys.
type schema struct {
	names  map[string]bool            // every key of every type
	byType map[string]map[string]bool // keys by type name as yaml prints it (config.HeartbeatConfig)
}

var schemaOnce = sync.OnceValue(func() *schema {
	s := &schema{names: map[string]bool{}, byType: map[string]map[string]bool{}}
	seen := map[reflect.Type]bool{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] {
			return
		}
		seen[t] = true
		fields := map[string]bool{}
		s.byType[t.String()] = fields
		for f := range t.Fields() {
			tag := f.Tag.Get("yaml")
			name, opts, _ := strings.Cut(tag, ",")
			if name == "-" {
				continue
			}
			if name != "" {
				s.names[name], fields[name] = true, true
			}
			walk(f.Type)
			if strings.Contains(opts, "inline") {
				// Inline fields' keys belong to the outer type too.
				maps := s.byType[indirect(f.Type).String()]
				for k := range maps {
					fields[k] = true
				}
			}
		}
	}
	walk(reflect.TypeFor[Config]())
	return s
})

func schemaKeys() *schema { return schemaOnce() }

func indirect(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// suggestField returns the key of typeName closest to the unknown name, if
// one is close enough to be a typo of it (at most two edits).
func suggestField(name, typeName string) string {
	best, bestDist := "", 3
	for k := range schemaKeys().byType[typeName] {
		if d := editDistance(name, k); d < bestDist || (d == bestDist && k < best) {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30 // no key is that long; spare the quadratic work
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

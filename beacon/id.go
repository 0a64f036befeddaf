package beacon

import (
	"regexp"
	"strings"
)

// MaxIDLength is the longest agent id sentinel accepts.
const MaxIDLength = 128

var idRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$`)

// ValidID reports whether id is an agent id sentinel accepts:
// ^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$.
func ValidID(id string) bool { return idRe.MatchString(id) }

// SanitizeID turns s into a valid agent id: characters outside
// [A-Za-z0-9._:@-] become '-', leading characters that may not start an id are
// dropped, and the result is cut to MaxIDLength. It returns "" when nothing
// usable is left.
func SanitizeID(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case isAlnum(r):
			b.WriteRune(r)
		case r == '.' || r == '_' || r == ':' || r == '@' || r == '-':
			if b.Len() > 0 {
				b.WriteRune(r)
			}
		default:
			if b.Len() > 0 {
				b.WriteByte('-')
			}
		}
		if b.Len() >= MaxIDLength {
			break
		}
	}
	id := b.String()
	if len(id) > MaxIDLength {
		id = id[:MaxIDLength]
	}
	if !ValidID(id) {
		return ""
	}
	return id
}

func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

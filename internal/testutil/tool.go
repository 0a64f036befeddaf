package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// Tool returns the path of the program name on PATH. When it is missing the
// test is skipped, except under CI=true, where a missing tool fails it: a
// test that needs a real tool must never pass on CI without running it.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found on PATH, and CI=true: install it (scripts/install-test-deps.sh)", name)
	}
	t.Skipf("%s not found on PATH; skipped (under CI=true this fails)", name)
	return ""
}

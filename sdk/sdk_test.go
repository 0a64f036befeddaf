// Package sdk tests the Python and TypeScript agent SDKs: their own unit
// tests with the standard runners, the TypeScript package's build and
// contents, and integration scenarios run by each SDK against the real
// sentinel binary built from this tree.
package sdk

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

// sentinelBin is the sentinel binary built by TestMain.
var sentinelBin string

func TestMain(m *testing.M) {
	os.Exit(testutil.MainWithBinary(m, "github.com/agentsentinel/sentinel/cmd/sentinel", &sentinelBin))
}

// Credentials of the test tenant.
const (
	tenant     = "acme"
	apiKey     = "sdk-acme-api-key"
	adminToken = "sdk-acme-admin-token"
)

// sentinelConfig makes every runtime token due for refresh half a second
// after it was issued, so that each heartbeat after the first is answered
// with a refreshed token.
const sentinelConfig = `heartbeat:
  default_interval: 1s
  min_interval: 100ms
  max_interval: 1h
  token_ttl: 1h
  token_refresh_before: 59m59s500ms
tenants:
  - id: ` + tenant + `
    api_keys: [` + apiKey + `]
    admin_tokens: [` + adminToken + `]
`

// interval is the agents' heartbeat interval in the integration scenarios.
const interval = time.Second

// slack is what a loaded two-core machine may add to "within one interval":
// process scheduling, a race-enabled sentinel, Python and Node start-up. With
// nine test suites sharing two cores (a load of 25) one revocation took
// longer than 2.5 s to reach checkpoint(); otherwise 0.2-1.2 s (logged).
const slack = 3 * time.Second

// loopbackEnv keeps a proxy configured in the environment (which Python's
// urllib honours) away from the tests' loopback traffic.
var loopbackEnv = []string{"NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost"}

// lookTool finds name on PATH; a missing tool fails the test under CI=true.
func lookTool(t *testing.T, name string) string { return testutil.Tool(t, name) }

func sdkDir(t *testing.T, name string) string {
	t.Helper()
	dir, err := filepath.Abs(name)
	require.NoError(t, err)
	return dir
}

// run runs cmd and fails the test with its output when it fails.
func run(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s:\n%s", strings.Join(cmd.Args, " "), out)
	return string(out)
}

var (
	tsOnce sync.Once
	tsErr  error
)

// buildTypeScript installs the TypeScript dev dependencies from the lockfile
// when node_modules is missing and compiles the package, its tests, examples
// and integration scenarios with tsc into dist/ (never committed; incremental,
// so an unchanged tree compiles in a fraction of the time).
func buildTypeScript(t *testing.T) string {
	t.Helper()
	lookTool(t, "node")
	npm := lookTool(t, "npm")
	dir := sdkDir(t, "typescript")
	tsOnce.Do(func() {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "typescript")); err != nil {
			cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund")
			cmd.Dir = dir
			if out, err := cmd.CombinedOutput(); err != nil {
				tsErr = fmt.Errorf("npm ci: %v\n%s", err, out)
				return
			}
		}
		cmd := exec.Command(filepath.Join(dir, "node_modules", ".bin", "tsc"), "-p", ".")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			tsErr = fmt.Errorf("tsc: %v\n%s", err, out)
		}
	})
	require.NoError(t, tsErr)
	return dir
}

func TestPythonUnit(t *testing.T) {
	t.Parallel()
	py := lookTool(t, "python3")
	dir := sdkDir(t, "python")
	out := run(t, exec.Command(py, "-c", "import sys; print(sys.version_info >= (3, 9))"))
	require.Equal(t, "True", strings.TrimSpace(out), "the Python SDK needs Python ≥ 3.9")
	cmd := exec.Command(py, "-m", "unittest", "discover", "-s", "tests", "-t", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append(loopbackEnv, "PYTHONPATH="+dir, "PYTHONDONTWRITEBYTECODE=1")...)
	out = run(t, cmd)
	require.Regexp(t, `(?m)^OK`, out)
	require.Regexp(t, `Ran [1-9][0-9]* tests`, out)
}

func TestTypeScriptUnit(t *testing.T) {
	t.Parallel()
	dir := buildTypeScript(t)
	tests, err := filepath.Glob(filepath.Join(dir, "dist", "test", "*.test.js"))
	require.NoError(t, err)
	require.NotEmpty(t, tests)
	cmd := exec.Command(lookTool(t, "node"), append([]string{"--test"}, tests...)...)
	cmd.Dir = dir
	out := run(t, cmd)
	require.Regexp(t, `(?m)^# pass [1-9]`, out)
	require.Regexp(t, `(?m)^# fail 0$`, out)
}

// TestTypeScriptPack checks what `npm pack` would publish: the compiled
// library with its types, the README and package.json, and nothing else.
func TestTypeScriptPack(t *testing.T) {
	t.Parallel()
	dir := buildTypeScript(t)
	cmd := exec.Command(lookTool(t, "npm"), "pack", "--dry-run", "--json", "--ignore-scripts")
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "npm pack --dry-run:\n%s", stderr.String())
	var packs []struct {
		Name  string `json:"name"`
		Files []struct {
			Path string `json:"path"`
		} `json:"files"`
	}
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &packs), stdout.String())
	require.Len(t, packs, 1)
	require.Equal(t, "@agentsentinel/beacon", packs[0].Name)
	var files []string
	for _, f := range packs[0].Files {
		files = append(files, f.Path)
	}
	for _, want := range []string{"package.json", "README.md", "dist/src/index.js", "dist/src/index.d.ts", "dist/src/beacon.js", "dist/src/abs.d.ts"} {
		require.Contains(t, files, want)
	}
	for _, f := range files {
		require.False(t, strings.HasPrefix(f, "dist/test/") || strings.HasPrefix(f, "src/") || strings.HasPrefix(f, "node_modules/") ||
			strings.HasPrefix(f, "dist/integration/") || strings.HasPrefix(f, "dist/examples/"), "npm pack would publish %s", f)
	}
	// The package's entry points resolve to files the build produced.
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
		Engines      struct {
			Node string `json:"node"`
		} `json:"engines"`
		Type    string `json:"type"`
		Types   string `json:"types"`
		Exports struct {
			Root struct {
				Types  string `json:"types"`
				Import string `json:"import"`
			} `json:"."`
		} `json:"exports"`
	}
	raw, err := os.ReadFile(filepath.Join(dir, "package.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &pkg))
	require.Equal(t, "module", pkg.Type)
	require.Empty(t, pkg.Dependencies, "no runtime dependency")
	require.Equal(t, ">=18", pkg.Engines.Node)
	require.FileExists(t, filepath.Join(dir, pkg.Types))
	require.FileExists(t, filepath.Join(dir, pkg.Exports.Root.Types))
	require.FileExists(t, filepath.Join(dir, pkg.Exports.Root.Import))
	// And the package imports by its name, as a user's code would.
	imp := exec.Command(lookTool(t, "node"), "--input-type=module", "-e",
		`import("@agentsentinel/beacon").then((m) => console.log(typeof m.Beacon, typeof m.ABSClient))`)
	imp.Dir = dir // a package may import itself by name through its exports
	require.Equal(t, "function function", strings.TrimSpace(run(t, imp)))
}

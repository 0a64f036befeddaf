package deploy

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
	line int
}

// stage is the instructions from one FROM to the next.
type stage struct {
	from  string // FROM's arguments
	insts []instruction
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.insts {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

func (s stage) one(t *testing.T, cmd string) instruction {
	t.Helper()
	all := s.all(cmd)
	require.Len(t, all, 1, "one %s in the stage FROM %s", cmd, s.from)
	return all[0]
}

// parseDockerfile returns the global ARGs (before the first FROM) and the
// stages. Comment lines are dropped, also inside continued instructions,
// as Docker does.
func parseDockerfile(t *testing.T) (globalArgs []instruction, stages []stage) {
	t.Helper()
	f, err := os.Open(dockerfile)
	require.NoError(t, err)
	defer f.Close()
	var insts []instruction
	var cur strings.Builder
	start := 0
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		body, continued := strings.CutSuffix(line, `\`)
		cur.WriteString(body)
		cur.WriteString(" ")
		if continued {
			continue
		}
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		insts = append(insts, instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start})
		cur.Reset()
	}
	require.NoError(t, sc.Err())
	require.Zero(t, cur.Len(), "the Dockerfile ends in a continued instruction")
	for _, in := range insts {
		switch {
		case in.cmd == "FROM":
			stages = append(stages, stage{from: in.args})
		case len(stages) == 0:
			require.Equal(t, "ARG", in.cmd, "line %d: only ARG may precede FROM", in.line)
			globalArgs = append(globalArgs, in)
		default:
			stages[len(stages)-1].insts = append(stages[len(stages)-1].insts, in)
		}
	}
	require.GreaterOrEqual(t, len(stages), 2, "a multi-stage build")
	return globalArgs, stages
}

// jsonArray parses the exec (JSON array) form of ENTRYPOINT and CMD.
func jsonArray(t *testing.T, in instruction) []string {
	t.Helper()
	var a []string
	require.NoError(t, json.Unmarshal([]byte(in.args), &a), "line %d: %s must use the JSON-array form", in.line, in.cmd)
	return a
}

// dockerfileUID is the numeric user of the final image.
func dockerfileUID(t *testing.T) int {
	t.Helper()
	_, stages := parseDockerfile(t)
	user := stages[len(stages)-1].one(t, "USER").args
	uid, err := strconv.Atoi(strings.Split(user, ":")[0])
	require.NoError(t, err, "USER %q must be numeric: runAsNonRoot can only verify a numeric user", user)
	return uid
}

// ldflagsVars returns the variables that -X sets in text, with the package
// spelled by pkgRef (e.g. "$(VPKG)" or "$VPKG").
func ldflagsVars(text, pkgRef string) []string {
	re := regexp.MustCompile(`-X\s+` + regexp.QuoteMeta(pkgRef) + `\.(\w+)=`)
	var vars []string
	for _, sub := range re.FindAllStringSubmatch(text, -1) {
		vars = append(vars, sub[1])
	}
	slices.Sort(vars)
	return vars
}

func TestDockerfile(t *testing.T) {
	globalArgs, stages := parseDockerfile(t)
	build, final := stages[0], stages[len(stages)-1]
	m := loadManifests(t)

	for _, tc := range []struct {
		name  string
		check func(t *testing.T)
	}{
		{"builds with the Go of go.mod", func(t *testing.T) {
			gomod, err := os.ReadFile(gomodFile)
			require.NoError(t, err)
			goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
			require.NotNil(t, goVersion)
			require.Regexp(t, `(^| )golang:\$\{GO_VERSION\} AS build$`, build.from)
			var def string
			for _, a := range globalArgs {
				if v, ok := strings.CutPrefix(a.args, "GO_VERSION="); ok {
					def = v
				}
			}
			require.Equal(t, string(goVersion[1]), def, "ARG GO_VERSION")
		}},
		{"static binaries", func(t *testing.T) {
			var env []string
			for _, in := range build.all("ENV") {
				env = append(env, in.args)
			}
			require.Contains(t, env, "CGO_ENABLED=0")
		}},
		{"stamps the version as make build does", func(t *testing.T) {
			mk, err := os.ReadFile(makefile)
			require.NoError(t, err)
			makeVPKG := regexp.MustCompile(`(?m)^VPKG\s*=\s*(\S+)`).FindSubmatch(mk)
			require.NotNil(t, makeVPKG)
			makeVars := ldflagsVars(string(mk), "$(VPKG)")
			require.NotEmpty(t, makeVars)

			var script string
			for _, in := range build.all("RUN") {
				if strings.Contains(in.args, "go build") {
					script = in.args
				}
			}
			require.NotEmpty(t, script, "a RUN with go build")
			require.Contains(t, script, "VPKG="+string(makeVPKG[1])+";")
			require.Equal(t, makeVars, ldflagsVars(script, "$VPKG"), "-X variables of the Makefile's LDFLAGS")
			require.Contains(t, script, "./cmd/...", "sentinel and beacon")
			var args []string
			for _, in := range build.all("ARG") {
				name, _, _ := strings.Cut(in.args, "=")
				args = append(args, name)
			}
			require.Subset(t, args, []string{"VERSION", "REVISION", "BRANCH"}, "build args")
		}},
		{"small non-root runtime image", func(t *testing.T) {
			require.NotContains(t, final.from, "golang")
			require.Contains(t, final.from, "distroless/static")
			require.NotZero(t, dockerfileUID(t), "USER is not root")
			require.Equal(t, dockerfileUID(t), *m.pod.SecurityContext.RunAsUser, "the manifest's runAsUser")
		}},
		{"sentinel and beacon in /bin", func(t *testing.T) {
			var copied []string
			for _, in := range final.all("COPY") {
				f := strings.Fields(in.args)
				if f[len(f)-1] == "/bin/" {
					for _, src := range f[:len(f)-1] {
						if !strings.HasPrefix(src, "--") {
							copied = append(copied, filepath.Base(src))
						}
					}
				}
			}
			require.ElementsMatch(t, []string{"sentinel", "beacon"}, copied)
		}},
		{"ENTRYPOINT is sentinel", func(t *testing.T) {
			require.Equal(t, []string{"/bin/sentinel"}, jsonArray(t, final.one(t, "ENTRYPOINT")))
		}},
		{"EXPOSE is the port of the binary and the manifest", func(t *testing.T) {
			expose := final.one(t, "EXPOSE").args
			require.Equal(t, "9464", expose)
			require.Equal(t, ":"+expose, binaryDefault(t, "web.listen-address"))
			require.Equal(t, expose, strconv.Itoa(containerPortByName(t, m.main, "http")))
		}},
		{"VOLUME is the storage path", func(t *testing.T) {
			vol := final.one(t, "VOLUME").args
			require.Equal(t, "/data", vol)
			require.Equal(t, vol, flagValue(jsonArray(t, final.one(t, "CMD")), "storage.path", ""))
		}},
		{"no HEALTHCHECK (distroless has nothing to run it with)", func(t *testing.T) {
			require.Empty(t, final.all("HEALTHCHECK"))
		}},
		{"CMD is accepted by the binary", func(t *testing.T) {
			cmd := jsonArray(t, final.one(t, "CMD"))
			require.Equal(t, "/etc/sentinel/sentinel.yml", flagValue(cmd, "config.file", ""))
			// The image ships no configuration: mount the example one
			// where CMD looks for it, and the volume's directory.
			root := t.TempDir()
			example, err := os.ReadFile(exampleConfig)
			require.NoError(t, err)
			var args []string
			for _, a := range cmd {
				name, value, ok := strings.Cut(a, "=")
				require.True(t, ok, "%q has the --flag=value form", a)
				if strings.HasPrefix(value, "/") {
					value = root + value
				}
				args = append(args, name+"="+value)
			}
			require.NoError(t, os.MkdirAll(filepath.Join(root, "etc/sentinel"), 0o755))
			require.NoError(t, os.MkdirAll(filepath.Join(root, "data"), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(root, "etc/sentinel/sentinel.yml"), example, 0o644))
			code, out := runSentinel(t, append(args, "--config.check")...)
			require.Equal(t, 0, code, out)
		}},
	} {
		t.Run(tc.name, tc.check)
	}
}

func TestDockerignore(t *testing.T) {
	content, err := os.ReadFile(dockerignoreFile)
	require.NoError(t, err)
	var patterns []string
	for _, line := range strings.Split(string(content), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, filepath.Clean(strings.TrimPrefix(line, "/")))
		}
	}
	ignored := func(path string) bool {
		for _, p := range patterns {
			if strings.HasPrefix(p, "!") {
				continue
			}
			if ok, _ := filepath.Match(p, path); ok {
				return true
			}
			if p2, ok := strings.CutPrefix(p, "**/"); ok {
				if ok, _ := filepath.Match(p2, filepath.Base(path)); ok {
					return true
				}
			}
		}
		return false
	}
	for _, tc := range []struct {
		path    string
		ignored bool
	}{
		{".git", true},
		{"bin", true},
		{"data", true},
		{"heartbeat.test", true},
		{"collector/collector.test", true},
		{"go.mod", false},
		{"go.sum", false},
		{"VERSION", false},
		{"cmd", false},
		{"Dockerfile", false},
	} {
		t.Run(tc.path, func(t *testing.T) {
			require.Equal(t, tc.ignored, ignored(tc.path))
		})
	}
}

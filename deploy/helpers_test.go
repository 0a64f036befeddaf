package deploy

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentsentinel/sentinel/internal/testutil"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// Paths of the files under test, relative to this package's directory.
const (
	manifestFile     = "kubernetes/sentinel.yaml"
	secretFile       = "kubernetes/secret.example.yaml"
	ruleFile         = "kubernetes/prometheusrule.yaml"
	kubeREADME       = "kubernetes/README.md"
	dockerfile       = "../Dockerfile"
	dockerignoreFile = "../.dockerignore"
	makefile         = "../Makefile"
	exampleConfig    = "sentinel.example.yml"
	gomodFile        = "../go.mod"
)

// Measured per-agent sizes (README, Performance): memory in the store
// (531-534 B) and in the snapshot on disk (BenchmarkSnapshot1M).
const (
	bytesPerAgent         = 530
	snapshotBytesPerAgent = 364
	journalCompactAt      = 16 << 20
)

// The minimal Kubernetes object model the tests need; yaml.v3 ignores the
// fields these structs do not name.

type meta struct {
	Name      string            `yaml:"name"`
	Namespace string            `yaml:"namespace"`
	Labels    map[string]string `yaml:"labels"`
}

type header struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   meta   `yaml:"metadata"`
}

// object is one YAML document of a manifest file.
type object struct {
	header
	file  string
	index int
	node  *yaml.Node
}

func (o object) String() string {
	return fmt.Sprintf("%s#%d %s/%s", o.file, o.index, o.Kind, o.Metadata.Name)
}

type httpGet struct {
	Path   string `yaml:"path"`
	Port   string `yaml:"port"` // a number or a port name
	Scheme string `yaml:"scheme"`
}

type probe struct {
	HTTPGet          *httpGet `yaml:"httpGet"`
	PeriodSeconds    int      `yaml:"periodSeconds"`
	TimeoutSeconds   int      `yaml:"timeoutSeconds"`
	FailureThreshold int      `yaml:"failureThreshold"`
}

type securityContext struct {
	RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
	RunAsUser                *int  `yaml:"runAsUser"`
	RunAsGroup               *int  `yaml:"runAsGroup"`
	FSGroup                  *int  `yaml:"fsGroup"`
	AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
	ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
	Privileged               *bool `yaml:"privileged"`
	Capabilities             struct {
		Add  []string `yaml:"add"`
		Drop []string `yaml:"drop"`
	} `yaml:"capabilities"`
	SeccompProfile *struct {
		Type string `yaml:"type"`
	} `yaml:"seccompProfile"`
}

type containerPort struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
	Protocol      string `yaml:"protocol"`
}

type volumeMount struct {
	Name      string `yaml:"name"`
	MountPath string `yaml:"mountPath"`
	SubPath   string `yaml:"subPath"`
	ReadOnly  bool   `yaml:"readOnly"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	Ports          []containerPort `yaml:"ports"`
	StartupProbe   *probe          `yaml:"startupProbe"`
	LivenessProbe  *probe          `yaml:"livenessProbe"`
	ReadinessProbe *probe          `yaml:"readinessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext securityContext `yaml:"securityContext"`
	VolumeMounts    []volumeMount   `yaml:"volumeMounts"`
}

type volume struct {
	Name      string `yaml:"name"`
	ConfigMap *struct {
		Name string `yaml:"name"`
	} `yaml:"configMap"`
	Secret *struct {
		SecretName string `yaml:"secretName"`
		Items      []any  `yaml:"items"`
	} `yaml:"secret"`
}

// sentinel returns the pod's container named sentinel (zero when none is).
func (p podSpec) sentinel() container {
	for _, c := range p.Containers {
		if c.Name == "sentinel" {
			return c
		}
	}
	return container{}
}

type podSpec struct {
	ServiceAccountName            string          `yaml:"serviceAccountName"`
	AutomountServiceAccountToken  *bool           `yaml:"automountServiceAccountToken"`
	TerminationGracePeriodSeconds *int            `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               securityContext `yaml:"securityContext"`
	Containers                    []container     `yaml:"containers"`
	Volumes                       []volume        `yaml:"volumes"`
}

type statefulSet struct {
	Spec struct {
		Replicas    *int   `yaml:"replicas"`
		ServiceName string `yaml:"serviceName"`
		Selector    struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata meta    `yaml:"metadata"`
			Spec     podSpec `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata meta `yaml:"metadata"`
			Spec     struct {
				AccessModes []string `yaml:"accessModes"`
				Resources   struct {
					Requests map[string]string `yaml:"requests"`
				} `yaml:"resources"`
			} `yaml:"spec"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

type service struct {
	header `yaml:",inline"`
	Spec   struct {
		ClusterIP string            `yaml:"clusterIP"`
		Selector  map[string]string `yaml:"selector"`
		Ports     []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type serviceMonitor struct {
	Spec struct {
		JobLabel string `yaml:"jobLabel"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		NamespaceSelector struct {
			Any        bool     `yaml:"any"`
			MatchNames []string `yaml:"matchNames"`
		} `yaml:"namespaceSelector"`
		Endpoints []struct {
			Port          string `yaml:"port"`
			Path          string `yaml:"path"`
			Scheme        string `yaml:"scheme"`
			Interval      string `yaml:"interval"`
			ScrapeTimeout string `yaml:"scrapeTimeout"`
			HonorLabels   bool   `yaml:"honorLabels"`
		} `yaml:"endpoints"`
	} `yaml:"spec"`
}

type configMap struct {
	Data map[string]string `yaml:"data"`
}

type secret struct {
	Type       string            `yaml:"type"`
	StringData map[string]string `yaml:"stringData"`
	Data       map[string]string `yaml:"data"`
}

// loadObjects parses every YAML document of file.
func loadObjects(t *testing.T, file string) []object {
	t.Helper()
	content, err := os.ReadFile(file)
	require.NoError(t, err)
	objs := parseObjects(t, file, content)
	require.NotEmpty(t, objs, "%s has no documents", file)
	return objs
}

// rendered is what the plain manifests and the rendered chart have in
// common: their objects and the sentinel container of their workload.
type rendered struct {
	all  []object
	main container // the sentinel container
}

func (r *rendered) find(kind, name string) (object, bool) {
	for _, o := range r.all {
		if o.Kind == kind && o.Metadata.Name == name {
			return o, true
		}
	}
	return object{}, false
}

func (r *rendered) ofKind(kind string) []object {
	var out []object
	for _, o := range r.all {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

func (r *rendered) services(t *testing.T) []service {
	t.Helper()
	var out []service
	for _, o := range r.ofKind("Service") {
		var s service
		require.NoError(t, o.node.Decode(&s), o.String())
		out = append(out, s)
	}
	return out
}

// mount returns the sentinel container's mount of the pod volume name.
func (r *rendered) mount(t *testing.T, name string) volumeMount {
	t.Helper()
	for _, vm := range r.main.VolumeMounts {
		if vm.Name == name {
			return vm
		}
	}
	require.Failf(t, "no volume mount", "the sentinel container mounts no volume %q", name)
	return volumeMount{}
}

// manifests are the parsed objects of sentinel.yaml and secret.example.yaml.
type manifests struct {
	rendered
	sts     statefulSet
	pod     podSpec
	cfgMap  configMap
	cfgName string
	secret  secret
	secName string
}

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	m := &manifests{rendered: rendered{all: append(loadObjects(t, manifestFile), loadObjects(t, secretFile)...)}}
	sets := m.ofKind("StatefulSet")
	require.Len(t, sets, 1, "one StatefulSet")
	require.NoError(t, sets[0].node.Decode(&m.sts))
	m.pod = m.sts.Spec.Template.Spec
	m.main = m.pod.sentinel()
	require.Equal(t, "sentinel", m.main.Name, "the StatefulSet has a container named sentinel")
	for _, v := range m.pod.Volumes {
		if v.ConfigMap != nil {
			m.cfgName = v.ConfigMap.Name
		}
		if v.Secret != nil {
			m.secName = v.Secret.SecretName
		}
	}
	require.NotEmpty(t, m.cfgName, "the pod mounts a ConfigMap")
	require.NotEmpty(t, m.secName, "the pod mounts a Secret")
	o, ok := m.find("ConfigMap", m.cfgName)
	require.True(t, ok, "ConfigMap %q is in the manifests", m.cfgName)
	require.NoError(t, o.node.Decode(&m.cfgMap))
	o, ok = m.find("Secret", m.secName)
	require.True(t, ok, "Secret %q is in %s", m.secName, secretFile)
	require.NoError(t, o.node.Decode(&m.secret))
	return m
}

// flagValue returns the value of --name in args (the last one wins, as in
// kingpin for non-repeatable flags), or def.
func flagValue(args []string, name, def string) string {
	v := def
	for _, a := range args {
		if s, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			v = s
		}
	}
	return v
}

// binaryDefault returns the default of a flag as sentinel --help prints it.
func binaryDefault(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command(sentinelBin, "--help").CombinedOutput()
	require.NoError(t, err, string(out))
	re := regexp.MustCompile(`--` + regexp.QuoteMeta(name) + `=("([^"]*)"|(\S+))`)
	sub := re.FindStringSubmatch(string(out))
	require.NotNil(t, sub, "sentinel --help shows no default for --%s:\n%s", name, out)
	return sub[2] + sub[3]
}

// podEnv mirrors the pod's file system in a temporary directory: every
// volume mount of the sentinel container becomes root+mountPath, the
// ConfigMap's keys and the Secret's keys are written there as the kubelet
// would, and args are the container's arguments with those paths rewritten
// and the listen address moved to a free loopback port.
type podEnv struct {
	root    string
	args    []string
	addr    string
	secrets string // the directory of the secret files
	storage string
}

func newPodEnv(t *testing.T, m *manifests) *podEnv {
	t.Helper()
	e := &podEnv{root: t.TempDir()}
	var mounts []string
	for _, vm := range m.main.VolumeMounts {
		mounts = append(mounts, vm.MountPath)
	}
	// Longest first: a nested mount takes precedence over its parent.
	slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
	var pairs []string
	for _, mp := range mounts {
		pairs = append(pairs, mp+"/", e.root+mp+"/")
	}
	rewriteText := strings.NewReplacer(pairs...).Replace
	rewritePath := func(p string) string { return strings.TrimSuffix(rewriteText(p+"/"), "/") }

	for _, v := range m.pod.Volumes {
		dir := e.root + m.mount(t, v.Name).MountPath
		require.NoError(t, os.MkdirAll(dir, 0o755))
		switch {
		case v.ConfigMap != nil:
			for k, content := range m.cfgMap.Data {
				require.NoError(t, os.WriteFile(filepath.Join(dir, k), []byte(rewriteText(content)), 0o644))
			}
		case v.Secret != nil:
			require.Empty(t, v.Secret.Items, "the Secret is mounted whole: every key a file")
			require.Empty(t, m.secret.Data, "the example Secret uses stringData")
			for k, content := range m.secret.StringData {
				require.NoError(t, os.WriteFile(filepath.Join(dir, k), []byte(content), 0o600))
			}
			e.secrets = dir
		}
	}
	for _, vct := range m.sts.Spec.VolumeClaimTemplates {
		require.NoError(t, os.MkdirAll(e.root+m.mount(t, vct.Metadata.Name).MountPath, 0o755))
	}

	e.addr = testutil.FreeAddr(t)
	for _, a := range m.main.Args {
		name, value, ok := strings.Cut(a, "=")
		require.True(t, ok, "argument %q has the --flag=value form", a)
		switch {
		case name == "--web.listen-address":
			value = e.addr
		case strings.HasPrefix(value, "/"):
			value = rewritePath(value)
		}
		if name == "--storage.path" {
			e.storage = value
		}
		e.args = append(e.args, name+"="+value)
	}
	return e
}

// podProc is the sentinel binary running with a pod's arguments. The test owns
// it: a cleanup kills it unless terminate saw it exit, and logs its output
// when the test failed.
type podProc struct {
	cmd     *exec.Cmd
	exited  chan error // Wait's result, sent once
	stopped bool
}

func startPod(t *testing.T, args []string) *podProc {
	t.Helper()
	var logs strings.Builder
	p := &podProc{cmd: exec.Command(sentinelBin, args...), exited: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = &logs, &logs
	require.NoError(t, p.cmd.Start())
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if !p.stopped {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("sentinel output:\n%s", logs.String())
		}
	})
	return p
}

// terminate sends SIGTERM, as the kubelet stops a pod, and returns how the
// binary exited; it fails the test when the binary is still running after
// grace.
func (p *podProc) terminate(t *testing.T, grace time.Duration) error {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.exited:
		p.stopped = true
		return err
	case <-time.After(grace):
		require.Failf(t, "sentinel did not stop", "still running %v after SIGTERM", grace)
		return nil
	}
}

// runSentinel runs the binary with args and returns its exit code and output.
func runSentinel(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(sentinelBin, args...)
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return exitErr.ExitCode(), string(out)
	}
	require.NoError(t, err)
	return 0, string(out)
}

var quantityRe = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$`)

// quantity parses a Kubernetes resource quantity (the suffixes in use here).
func quantity(t *testing.T, s string) float64 {
	t.Helper()
	sub := quantityRe.FindStringSubmatch(s)
	require.NotNil(t, sub, "quantity %q", s)
	v, err := strconv.ParseFloat(sub[1], 64)
	require.NoError(t, err)
	mult := map[string]float64{
		"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
		"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
	}[sub[2]]
	return v * mult
}

var goMemLimitRe = regexp.MustCompile(`^([0-9]+)(B|KiB|MiB|GiB|TiB)?$`)

// goMemLimit parses a GOMEMLIMIT value (runtime/debug.SetMemoryLimit syntax).
func goMemLimit(t *testing.T, s string) float64 {
	t.Helper()
	sub := goMemLimitRe.FindStringSubmatch(s)
	require.NotNil(t, sub, "GOMEMLIMIT %q", s)
	v, err := strconv.ParseFloat(sub[1], 64)
	require.NoError(t, err)
	return v * map[string]float64{"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}[sub[2]]
}

// subset reports whether every label of sel is in labels with the same value.
func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false // an empty selector selects everything: never intended here
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func mustDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	require.NoError(t, err, "duration %q", s)
	return d
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

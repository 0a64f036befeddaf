package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/agentsentinel/sentinel/config"
	"github.com/agentsentinel/sentinel/dashboards"
	"github.com/agentsentinel/sentinel/deploy/helm"
	"github.com/agentsentinel/sentinel/internal/testutil"
)

// Paths of the chart and its test inputs, relative to this package.
const (
	chartDir          = "helm/sentinel"
	chartReplicated   = "testdata/helm/replicated-operator.yaml"
	chartSecretsFile  = "testdata/helm/secrets.yaml"
	rulesSource       = "../alerts/sentinel.rules.yml"
	helmVersion       = "v3.22"
	helmInstallModule = "helm.sh/helm/v3/cmd/helm@v3.22.0"
)

// helmBin finds helm on PATH or where `go install` puts it. A missing helm
// fails the test (never skips): `make test-deps` installs it.
func helmBin(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	require.NoError(t, err)
	for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
		p := filepath.Join(dir, "bin", "helm")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("helm not found on PATH or in $(go env GOPATH)/bin: run `make test-deps` (go install %s)", helmInstallModule)
	return ""
}

// runHelm runs helm with args and returns its standard output, or its error
// with everything it printed.
func runHelm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), helmBin(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// chartCase is one way of installing the chart the tests render.
type chartCase struct {
	name        string
	values      []string // -f files
	replicated  bool
	operator    bool // ServiceMonitor and PrometheusRule
	replicas    int
	namespace   string
	releaseName string
}

var chartCases = []chartCase{
	{name: "default", replicas: 1, namespace: "sentinel", releaseName: "sentinel"},
	{name: "replicated-operator", values: []string{chartReplicated}, replicated: true, operator: true, replicas: 3,
		namespace: "agents", releaseName: "prod"},
}

func TestHelmVersion(t *testing.T) {
	out, err := runHelm(t, "version", "--short")
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(out, helmVersion), "helm %s, want %s (go install %s)", out, helmVersion, helmInstallModule)
}

func TestHelmLint(t *testing.T) {
	for _, c := range chartCases {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir, "--namespace", c.namespace}
			for _, f := range c.values {
				args = append(args, "-f", f)
			}
			out, err := runHelm(t, args...)
			require.NoError(t, err)
			require.Contains(t, out, "1 chart(s) linted, 0 chart(s) failed")
		})
	}
}

// TestHelmSchemaRejects checks that values.schema.json turns a wrong value
// into a failed install that names the field.
func TestHelmSchemaRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  []string
		want string
	}{
		{"replicas without postgres", []string{"replicaCount=2"}, "replicaCount"},
		{"an inline secret", []string{"tenants[0].apiKeys[0]=my-plain-key"}, "apiKeys"},
		{"a secret reference without key", []string{"bridge.bearerToken.key=null"}, "bridge"},
		{"a bad duration", []string{"heartbeat.default_interval=sixty"}, "default_interval"},
		{"a bad threshold", []string{"heartbeat.silent_after=0"}, "silent_after"},
		{"a bad tenant id", []string{"tenants[0].id=-acme"}, "id"},
		{"an unknown value", []string{"replicas=3"}, "replicas"},
		{"the latest tag", []string{"image.tag=latest"}, "tag"},
		{"a webhook URL that is none", []string{"tenants[0].webhook.url=hooks.example.com"}, "url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"template", "sentinel", chartDir}
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			_, err := runHelm(t, args...)
			require.Error(t, err, "the chart accepted %v", tc.set)
			_, helmSays, _ := strings.Cut(err.Error(), "\n") // after the command line
			require.Contains(t, helmSays, "values don't meet the specifications of the schema")
			require.Contains(t, helmSays, tc.want)
			require.NotContains(t, helmSays, "my-plain-key", "a value that may be a secret is never echoed")
		})
	}
	t.Run("replicas with postgres", func(t *testing.T) {
		_, err := runHelm(t, "template", "sentinel", chartDir, "--set", "replicaCount=2", "--set", "storage.postgres.enabled=true")
		require.NoError(t, err)
	})
}

// chart is the rendered chart, parsed.
type chart struct {
	rendered
	c       chartCase
	kind    string // StatefulSet or Deployment
	work    workload
	pod     podSpec
	config  string // sentinel.yml of the ConfigMap
	secrets map[string]map[string]string
	notes   string
}

// workload is what the tests read of a StatefulSet or a Deployment.
type workload struct {
	Spec struct {
		Replicas    *int   `yaml:"replicas"`
		ServiceName string `yaml:"serviceName"`
		Selector    struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Strategy struct {
			RollingUpdate struct {
				MaxUnavailable any `yaml:"maxUnavailable"`
			} `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		Template struct {
			Metadata meta    `yaml:"metadata"`
			Spec     podSpec `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata meta `yaml:"metadata"`
			Spec     struct {
				Resources struct {
					Requests map[string]string `yaml:"requests"`
				} `yaml:"resources"`
			} `yaml:"spec"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

// chartServiceMonitor adds the authorization the chart may set.
type chartServiceMonitor struct {
	Spec struct {
		JobLabel string `yaml:"jobLabel"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		NamespaceSelector struct {
			MatchNames []string `yaml:"matchNames"`
		} `yaml:"namespaceSelector"`
		Endpoints []struct {
			Port          string `yaml:"port"`
			Path          string `yaml:"path"`
			Interval      string `yaml:"interval"`
			ScrapeTimeout string `yaml:"scrapeTimeout"`
			HonorLabels   bool   `yaml:"honorLabels"`
			Authorization *struct {
				Type        string `yaml:"type"`
				Credentials struct {
					Name string `yaml:"name"`
					Key  string `yaml:"key"`
				} `yaml:"credentials"`
			} `yaml:"authorization"`
		} `yaml:"endpoints"`
	} `yaml:"spec"`
}

// parseObjects parses every YAML document of content, skipping empty ones
// ("---" at the end).
func parseObjects(t *testing.T, name string, content []byte) []object {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(content))
	var objs []object
	for i := 0; ; i++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, "%s: document %d", name, i)
		if len(n.Content) == 0 || n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null" {
			continue
		}
		o := object{file: name, index: i, node: &n}
		require.NoError(t, n.Decode(&o.header), "%s: document %d", name, i)
		objs = append(objs, o)
	}
	return objs
}

// chartSecrets reads the Secrets a user creates before installing.
func chartSecrets(t *testing.T) map[string]map[string]string {
	t.Helper()
	b, err := os.ReadFile(chartSecretsFile)
	require.NoError(t, err)
	out := map[string]map[string]string{}
	for _, o := range parseObjects(t, chartSecretsFile, b) {
		require.Equal(t, "Secret", o.Kind)
		var s secret
		require.NoError(t, o.node.Decode(&s))
		out[o.Metadata.Name] = s.StringData
	}
	return out
}

func renderChart(t *testing.T, c chartCase) *chart {
	t.Helper()
	args := []string{"template", c.releaseName, chartDir, "--namespace", c.namespace}
	for _, f := range c.values {
		args = append(args, "-f", f)
	}
	out, err := runHelm(t, args...)
	require.NoError(t, err)
	notes := renderNotes(t, c)
	ch := &chart{rendered: rendered{all: parseObjects(t, "helm template "+c.name, []byte(out))}, c: c, secrets: chartSecrets(t), notes: notes}
	for _, kind := range []string{"StatefulSet", "Deployment"} {
		for _, o := range ch.ofKind(kind) {
			require.Empty(t, ch.kind, "one workload")
			ch.kind = kind
			require.NoError(t, o.node.Decode(&ch.work))
		}
	}
	require.NotEmpty(t, ch.kind, "a StatefulSet or a Deployment")
	ch.pod = ch.work.Spec.Template.Spec
	ch.main = ch.pod.sentinel()
	require.Equal(t, "sentinel", ch.main.Name, "a container named sentinel")
	for _, v := range ch.pod.Volumes {
		if v.ConfigMap != nil {
			o, ok := ch.find("ConfigMap", v.ConfigMap.Name)
			require.True(t, ok, "ConfigMap %s is rendered", v.ConfigMap.Name)
			var cm configMap
			require.NoError(t, o.node.Decode(&cm))
			ch.config = cm.Data[filepath.Base(flagValue(ch.main.Args, "config.file", ""))]
		}
	}
	require.NotEmpty(t, ch.config, "the --config.file is a key of the mounted ConfigMap")
	return ch
}

// renderNotes renders NOTES.txt for c. helm template skips it and helm
// install --dry-run needs a cluster, so a copy of the chart renders it
// inside an ordinary template.
func renderNotes(t *testing.T, c chartCase) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "sentinel")
	require.NoError(t, os.CopyFS(dir, os.DirFS(chartDir)))
	notes, err := os.ReadFile(filepath.Join(dir, "templates", "NOTES.txt"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "templates", "_notes_under_test.tpl"),
		[]byte("{{- define \"notesUnderTest\" -}}\n"+string(notes)+"\n{{- end -}}\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "templates", "notes-under-test.yaml"),
		[]byte("notes: {{ include \"notesUnderTest\" . | toJson }}\n"), 0o644))
	args := []string{"template", c.releaseName, dir, "--namespace", c.namespace, "--show-only", "templates/notes-under-test.yaml"}
	for _, f := range c.values {
		abs, err := filepath.Abs(f)
		require.NoError(t, err)
		args = append(args, "-f", abs)
	}
	out, err := runHelm(t, args...)
	require.NoError(t, err)
	var doc struct {
		Notes string `yaml:"notes"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(out), &doc))
	require.NotEmpty(t, doc.Notes)
	return doc.Notes
}

// secretFiles returns every *_file and *_files value of a sentinel
// configuration, wherever it is: what the configuration reads from Secrets.
func secretFiles(t *testing.T, config string) []string {
	t.Helper()
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal([]byte(config), &doc))
	var files []string
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i].Value, n.Content[i+1]
				switch {
				case strings.HasSuffix(k, "_file") && v.Kind == yaml.ScalarNode:
					files = append(files, v.Value)
				case strings.HasSuffix(k, "_files") && v.Kind == yaml.SequenceNode:
					for _, f := range v.Content {
						files = append(files, f.Value)
					}
				}
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&doc)
	return files
}

// chartPodEnv mirrors the pod's file system under a temporary root, as
// newPodEnv does for the plain manifests: the ConfigMap's and the Secrets'
// keys written where the kubelet would mount them, every other volume an
// empty directory, the arguments rewritten to those paths and a free
// loopback port.
type chartPodEnv struct {
	root string
	args []string
	addr string
}

func newChartPodEnv(t *testing.T, c *chart) *chartPodEnv {
	t.Helper()
	e := &chartPodEnv{root: t.TempDir(), addr: testutil.FreeAddr(t)}
	rewrite := func(s string) string { return strings.ReplaceAll(s, "/etc/sentinel/", e.root+"/etc/sentinel/") }
	for _, v := range c.pod.Volumes {
		dir := e.root + c.mount(t, v.Name).MountPath
		require.NoError(t, os.MkdirAll(dir, 0o755))
		switch {
		case v.ConfigMap != nil:
			cfg := filepath.Join(dir, filepath.Base(flagValue(c.main.Args, "config.file", "")))
			require.NoError(t, os.WriteFile(cfg, []byte(rewrite(c.config)), 0o644))
		case v.Secret != nil:
			keys, ok := c.secrets[v.Secret.SecretName]
			require.True(t, ok, "the pod mounts Secret %s, which %s does not create", v.Secret.SecretName, chartSecretsFile)
			for k, val := range keys {
				require.NoError(t, os.WriteFile(filepath.Join(dir, k), []byte(val), 0o600))
			}
		}
	}
	for _, vct := range c.work.Spec.VolumeClaimTemplates {
		require.NoError(t, os.MkdirAll(e.root+c.mount(t, vct.Metadata.Name).MountPath, 0o755))
	}
	for _, a := range c.main.Args {
		name, value, ok := strings.Cut(a, "=")
		require.True(t, ok, "argument %q has the --flag=value form", a)
		switch {
		case name == "--web.listen-address":
			value = e.addr
		case strings.HasPrefix(value, "/"):
			value = e.root + value
		}
		e.args = append(e.args, name+"="+value)
	}
	return e
}

func TestHelmTemplate(t *testing.T) {
	for _, cc := range chartCases {
		t.Run(cc.name, func(t *testing.T) {
			c := renderChart(t, cc)
			testChart(t, c)
		})
	}
}

func testChart(t *testing.T, c *chart) {
	port := containerPortByName(t, c.main, "http")
	podLabels := c.work.Spec.Template.Metadata.Labels
	dashboardNS := c.c.namespace
	if c.c.operator {
		dashboardNS = "monitoring" // testdata/helm/replicated-operator.yaml
	}

	for _, tc := range []struct {
		name  string
		check func(t *testing.T)
	}{
		{"objects", func(t *testing.T) {
			count := map[string]int{}
			seen := map[string]bool{}
			for _, o := range c.all {
				count[o.APIVersion+" "+o.Kind]++
				key := o.Kind + "/" + o.Metadata.Name
				require.False(t, seen[key], "%s twice", key)
				seen[key] = true
				require.Regexp(t, dnsLabel, o.Metadata.Name)
				require.Equal(t, "sentinel", o.Metadata.Labels["app.kubernetes.io/name"], key)
				require.Equal(t, c.c.releaseName, o.Metadata.Labels["app.kubernetes.io/instance"], key)
				ns := c.c.namespace
				if strings.Contains(o.Metadata.Name, "-dashboard-") {
					ns = dashboardNS
				}
				require.Equal(t, ns, o.Metadata.Namespace, key)
			}
			want := map[string]int{
				"v1 ServiceAccount": 1,
				"v1 ConfigMap":      1 + len(dashboards.All()),
				"v1 Service":        2,
			}
			if c.c.replicated {
				want["apps/v1 Deployment"] = 1
				want["policy/v1 PodDisruptionBudget"] = 1
			} else {
				want["apps/v1 StatefulSet"] = 1
			}
			if c.c.operator {
				want["monitoring.coreos.com/v1 ServiceMonitor"] = 1
				want["monitoring.coreos.com/v1 PrometheusRule"] = 1
			}
			require.Equal(t, want, count, "no Secret: the user creates them (NOTES.txt)")
		}},
		{"replicas and storage", func(t *testing.T) {
			require.NotNil(t, c.work.Spec.Replicas)
			require.Equal(t, c.c.replicas, *c.work.Spec.Replicas)
			require.True(t, subset(c.work.Spec.Selector.MatchLabels, podLabels))
			storage := filepath.Clean(flagValue(c.main.Args, "storage.path", ""))
			if !c.c.replicated {
				require.Len(t, c.work.Spec.VolumeClaimTemplates, 1)
				vct := c.work.Spec.VolumeClaimTemplates[0]
				require.Equal(t, storage, c.mount(t, vct.Metadata.Name).MountPath, "--storage.path is the volume claim's mount")
				maxAgents := chartConfig(t, c).Heartbeat.MaxAgents
				require.GreaterOrEqual(t, quantity(t, vct.Spec.Resources.Requests["storage"]),
					float64(2*snapshotBytesPerAgent*maxAgents+2*journalCompactAt))
				svc, ok := c.find("Service", c.work.Spec.ServiceName)
				require.True(t, ok, "governing Service %s", c.work.Spec.ServiceName)
				var s service
				require.NoError(t, svc.node.Decode(&s))
				require.Equal(t, "None", s.Spec.ClusterIP)
				return
			}
			require.Empty(t, c.work.Spec.VolumeClaimTemplates)
			require.Equal(t, 0, c.work.Spec.Strategy.RollingUpdate.MaxUnavailable, "a rollout keeps every replica serving")
			require.NotNil(t, chartConfig(t, c).Storage.Postgres, "replicas share PostgreSQL")
			var pdb struct {
				Spec struct {
					MaxUnavailable int `yaml:"maxUnavailable"`
					Selector       struct {
						MatchLabels map[string]string `yaml:"matchLabels"`
					} `yaml:"selector"`
				} `yaml:"spec"`
			}
			pdbs := c.ofKind("PodDisruptionBudget")
			require.Len(t, pdbs, 1)
			require.NoError(t, pdbs[0].node.Decode(&pdb))
			require.True(t, subset(pdb.Spec.Selector.MatchLabels, podLabels), "the PDB selects the pods")
			require.Equal(t, pdb.Spec.Selector.MatchLabels, c.work.Spec.Selector.MatchLabels)
			require.Less(t, pdb.Spec.MaxUnavailable, c.c.replicas)
		}},
		{"port and probes match the binary's flags", func(t *testing.T) {
			require.Equal(t, ":9464", binaryDefault(t, "web.listen-address"))
			require.Equal(t, fmt.Sprintf(":%d", port), flagValue(c.main.Args, "web.listen-address", binaryDefault(t, "web.listen-address")))
			requireProbe(t, c.main, c.main.StartupProbe, "/-/healthy", port)
			requireProbe(t, c.main, c.main.LivenessProbe, "/-/healthy", port)
			requireProbe(t, c.main, c.main.ReadinessProbe, "/-/ready", port)
			require.GreaterOrEqual(t, c.main.StartupProbe.PeriodSeconds*c.main.StartupProbe.FailureThreshold, 300)
			timeout := mustDuration(t, flagValue(c.main.Args, "web.shutdown-timeout", binaryDefault(t, "web.shutdown-timeout")))
			require.Greater(t, time.Duration(*c.pod.TerminationGracePeriodSeconds)*time.Second, timeout+15*time.Second)
			for _, s := range c.services(t) {
				require.True(t, subset(s.Spec.Selector, podLabels), "Service %s selects the pods", s.Metadata.Name)
				require.Len(t, s.Spec.Ports, 1)
				require.Equal(t, "http", s.Spec.Ports[0].TargetPort)
				require.Equal(t, 9464, s.Spec.Ports[0].Port)
			}
		}},
		{"security context", func(t *testing.T) {
			psc, csc := c.pod.SecurityContext, c.main.SecurityContext
			require.True(t, isTrue(psc.RunAsNonRoot) && isTrue(csc.RunAsNonRoot))
			require.NotNil(t, csc.RunAsUser)
			require.Equal(t, dockerfileUID(t), *csc.RunAsUser, "the Dockerfile's USER")
			require.NotNil(t, psc.FSGroup)
			require.True(t, isTrue(csc.ReadOnlyRootFilesystem))
			require.NotNil(t, csc.AllowPrivilegeEscalation)
			require.False(t, *csc.AllowPrivilegeEscalation)
			require.Equal(t, []string{"ALL"}, csc.Capabilities.Drop)
			require.NotNil(t, psc.SeccompProfile)
			require.Equal(t, "RuntimeDefault", psc.SeccompProfile.Type)
			require.NotNil(t, c.pod.AutomountServiceAccountToken)
			require.False(t, *c.pod.AutomountServiceAccountToken)
			_, ok := c.find("ServiceAccount", c.pod.ServiceAccountName)
			require.True(t, ok)
		}},
		{"resources fit max_agents", func(t *testing.T) {
			for _, r := range []string{"cpu", "memory"} {
				require.Contains(t, c.main.Resources.Requests, r)
			}
			limit := quantity(t, c.main.Resources.Limits["memory"])
			maxAgents := chartConfig(t, c).Heartbeat.MaxAgents
			require.GreaterOrEqual(t, limit, float64(2*bytesPerAgent*maxAgents))
			var memLimit string
			for _, e := range c.main.Env {
				if e.Name == "GOMEMLIMIT" {
					memLimit = e.Value
				}
			}
			soft := goMemLimit(t, memLimit)
			require.Less(t, soft, limit, "GOMEMLIMIT below the memory limit")
			require.GreaterOrEqual(t, soft, 0.75*limit, "GOMEMLIMIT close to the memory limit")
		}},
		{"every Secret reference resolves to a key", func(t *testing.T) {
			mounted := map[string]string{} // mount path -> Secret
			for _, v := range c.pod.Volumes {
				if v.Secret == nil {
					continue
				}
				require.Empty(t, v.Secret.Items, "mounted whole, so that rotated keys reach the pod")
				vm := c.mount(t, v.Name)
				require.Empty(t, vm.SubPath)
				require.True(t, vm.ReadOnly)
				mounted[vm.MountPath] = v.Secret.SecretName
			}
			require.NotEmpty(t, mounted)
			files := secretFiles(t, c.config)
			require.NotEmpty(t, files)
			used := map[string]bool{}
			for _, f := range files {
				name, ok := mounted[filepath.Dir(f)]
				require.True(t, ok, "%s is in no mounted Secret", f)
				_, ok = c.secrets[name][filepath.Base(f)]
				require.True(t, ok, "%s: Secret %s has no key %s", f, name, filepath.Base(f))
				used[name] = true
			}
			for _, name := range mounted {
				require.True(t, used[name], "Secret %s is mounted but the configuration reads nothing from it", name)
			}
			for _, o := range c.ofKind("ServiceMonitor") {
				var sm chartServiceMonitor
				require.NoError(t, o.node.Decode(&sm))
				for _, ep := range sm.Spec.Endpoints {
					if ep.Authorization == nil {
						continue
					}
					cred := ep.Authorization.Credentials
					_, ok := c.secrets[cred.Name][cred.Key]
					require.True(t, ok, "ServiceMonitor credentials %s/%s", cred.Name, cred.Key)
					require.Contains(t, files, filepath.Join("/etc/sentinel/secrets", cred.Name, cred.Key),
						"Prometheus sends the token sentinel's metrics.bearer_token_file holds")
				}
			}
			// NOTES.txt tells the user to create every key the pod reads.
			for _, f := range files {
				require.Contains(t, c.notes, "--from-literal="+filepath.Base(f)+"=", "NOTES.txt")
			}
			if c.c.replicated {
				require.Contains(t, c.notes, "--from-literal=dsn='postgres://", "the DSN is no random value")
			}
		}},
		{"defaults are those of deploy/kubernetes", func(t *testing.T) {
			if c.c.name != "default" {
				return
			}
			want := manifestConfig(t, loadManifests(t))
			got := chartConfig(t, c)
			require.Equal(t, want.Heartbeat, got.Heartbeat, "heartbeat thresholds of deploy/kubernetes")
			require.Equal(t, want.Bridge.KillSwitch, got.Bridge.KillSwitch)
			require.Equal(t, want.Bridge.Watchdog, got.Bridge.Watchdog)
			require.Len(t, got.Tenants, len(want.Tenants))
			require.Nil(t, got.Storage.Postgres, "the embedded store by default")
		}},
		{"no secret in the ConfigMap", func(t *testing.T) {
			for _, keys := range c.secrets {
				for _, v := range keys {
					require.NotContains(t, c.config, v)
				}
			}
			var raw map[string]any
			require.NoError(t, yaml.Unmarshal([]byte(c.config), &raw))
			for _, k := range []string{"admin_tokens", "api_keys", "secrets", "bearer_token", "dsn"} {
				require.NotContains(t, c.config, "\n"+k+":")
				require.NotRegexp(t, `(?m)^\s+`+k+`:`, c.config)
			}
		}},
		{"config.check passes with the Secrets mounted", func(t *testing.T) {
			env := newChartPodEnv(t, c)
			code, out := runSentinel(t, append(env.args, "--config.check")...)
			require.Equal(t, 0, code, out)
			require.Contains(t, out, "SUCCESS")
		}},
		{"ServiceMonitor", func(t *testing.T) {
			mons := c.ofKind("ServiceMonitor")
			if !c.c.operator {
				require.Empty(t, mons)
				return
			}
			var sm chartServiceMonitor
			require.NoError(t, mons[0].node.Decode(&sm))
			var selected []service
			for _, s := range c.services(t) {
				if subset(sm.Spec.Selector.MatchLabels, s.Metadata.Labels) {
					selected = append(selected, s)
				}
			}
			require.Len(t, selected, 1, "each pod scraped once")
			require.Equal(t, []string{c.c.namespace}, sm.Spec.NamespaceSelector.MatchNames)
			job := selected[0].Metadata.Labels[sm.Spec.JobLabel]
			require.Equal(t, "sentinel", job, "the job name comes from the Service's %s", sm.Spec.JobLabel)
			rules, err := os.ReadFile(rulesSource)
			require.NoError(t, err)
			require.Contains(t, string(rules), fmt.Sprintf(`up{job=%q}`, job), "SentinelDown watches this job")
			require.Len(t, sm.Spec.Endpoints, 1)
			ep := sm.Spec.Endpoints[0]
			require.Equal(t, selected[0].Spec.Ports[0].Name, ep.Port)
			require.Equal(t, flagValue(c.main.Args, "web.telemetry-path", binaryDefault(t, "web.telemetry-path")), ep.Path)
			require.Equal(t, binaryDefault(t, "web.telemetry-path"), ep.Path)
			require.LessOrEqual(t, mustDuration(t, ep.ScrapeTimeout), mustDuration(t, ep.Interval))
			require.True(t, ep.HonorLabels)
			require.NotNil(t, ep.Authorization, "the values protect /metrics with a bearer token")
		}},
		{"PrometheusRule is alerts/sentinel.rules.yml", func(t *testing.T) {
			prs := c.ofKind("PrometheusRule")
			if !c.c.operator {
				require.Empty(t, prs)
				return
			}
			var pr struct {
				Spec any `yaml:"spec"`
			}
			require.NoError(t, prs[0].node.Decode(&pr))
			b, err := os.ReadFile(rulesSource)
			require.NoError(t, err)
			var rules any
			require.NoError(t, yaml.Unmarshal(b, &rules))
			require.Equal(t, rules, pr.Spec)
		}},
		{"dashboards for the Grafana sidecar", func(t *testing.T) {
			var got []string
			for _, o := range c.ofKind("ConfigMap") {
				if !strings.Contains(o.Metadata.Name, "-dashboard-") {
					continue
				}
				var cm struct {
					Metadata struct {
						Labels      map[string]string `yaml:"labels"`
						Annotations map[string]string `yaml:"annotations"`
					} `yaml:"metadata"`
					Data map[string]string `yaml:"data"`
				}
				require.NoError(t, o.node.Decode(&cm))
				require.Equal(t, "1", cm.Metadata.Labels["grafana_dashboard"], "kube-prometheus-stack's sidecar label")
				require.Equal(t, grafanaFolder(t), cm.Metadata.Annotations["grafana_folder"], "the folder of deploy/grafana's provider")
				require.Len(t, cm.Data, 1)
				for name, content := range cm.Data {
					want, err := os.ReadFile(filepath.Join("..", "dashboards", name))
					require.NoError(t, err)
					require.Equal(t, string(want), content+"\n", "%s: the chart's copy is dashboards/%s", o.Metadata.Name, name)
					got = append(got, name)
				}
			}
			var want []string
			for _, d := range dashboards.All() {
				want = append(want, d.FileName())
			}
			require.ElementsMatch(t, want, got)
		}},
	} {
		t.Run(tc.name, tc.check)
	}
}

// TestHelmChartServes runs sentinel as the default chart's pod runs it:
// the probes answer, an agent registers with its key from the Secret, and
// SIGTERM ends it within the grace period with its state on the volume.
func TestHelmChartServes(t *testing.T) {
	c := renderChart(t, chartCases[0])
	env := newChartPodEnv(t, c)
	proc := startPod(t, env.args)
	client := &http.Client{Timeout: 5 * time.Second}
	do := func(method, path, token, body string) int {
		req, err := http.NewRequestWithContext(t.Context(), method, "http://"+env.addr+path, strings.NewReader(body))
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Eventually(t, func() bool { return do(http.MethodGet, c.main.ReadinessProbe.HTTPGet.Path, "", "") == http.StatusOK },
		10*time.Second, 20*time.Millisecond, "readiness probe")
	require.Equal(t, http.StatusOK, do(http.MethodGet, c.main.LivenessProbe.HTTPGet.Path, "", ""))
	keys := c.secrets["sentinel-secrets"]
	require.Equal(t, http.StatusOK, do(http.MethodPost, "/api/v1/installations/agent-01/heartbeat", keys["acme-api-key"], `{"status":"healthy"}`))
	require.Equal(t, http.StatusOK, do(http.MethodGet, "/api/v1/installations/agent-01", keys["acme-admin-token"], ""))

	require.NoError(t, proc.terminate(t, 10*time.Second))
	storage := flagValue(env.args, "storage.path", "")
	for _, f := range []string{"agents.snapshot", "token.key"} {
		require.FileExists(t, filepath.Join(storage, f))
	}
}

// TestHelmGeneratedUpToDate fails when the chart's copies of the rules and
// the dashboards drift from their sources.
func TestHelmGeneratedUpToDate(t *testing.T) {
	rules, err := os.ReadFile(rulesSource)
	require.NoError(t, err)
	files, err := helm.Generated(rules)
	require.NoError(t, err)
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(chartDir, name))
		require.NoError(t, err, "run `make generate`")
		require.True(t, bytes.Equal(want, got), "%s/%s is out of date: run `make generate`", chartDir, name)
	}
	onDisk, err := filepath.Glob(filepath.Join(chartDir, helm.DashboardsDir, "*.json"))
	require.NoError(t, err)
	for _, f := range onDisk {
		rel, err := filepath.Rel(chartDir, f)
		require.NoError(t, err)
		_, ok := files[filepath.ToSlash(rel)]
		require.True(t, ok, "%s is generated by nothing: run `make generate`", f)
	}
	require.Equal(t, filepath.Join("deploy", chartDir), filepath.FromSlash(helm.ChartDir))
}

// chartConfig loads the chart's configuration as sentinel does.
func chartConfig(t *testing.T, c *chart) *config.Config {
	t.Helper()
	env := newChartPodEnv(t, c)
	cfg, err := config.Load(flagValue(env.args, "config.file", ""))
	require.NoError(t, err)
	return cfg
}

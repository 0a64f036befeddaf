package deploy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/agentsentinel/sentinel/config"
)

// sentinelBin is the real sentinel binary, built once by TestMain.
var sentinelBin string

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sentinel-deploy-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	sentinelBin = filepath.Join(dir, "sentinel")
	build := exec.Command("go", "build", "-o", sentinelBin, "github.com/agentsentinel/sentinel/cmd/sentinel")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building sentinel: %v\n", err)
		return 1
	}
	return m.Run()
}

// namespaced kinds of the manifests; everything else must be cluster-scoped.
var namespacedKinds = map[string]bool{
	"ServiceAccount": true, "ConfigMap": true, "Secret": true, "Service": true,
	"StatefulSet": true, "ServiceMonitor": true, "PodDisruptionBudget": true,
	"PrometheusRule": true,
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

func TestEveryDocumentIsAnObject(t *testing.T) {
	for _, file := range []string{manifestFile, secretFile, ruleFile} {
		seen := map[string]bool{}
		for _, o := range loadObjects(t, file) {
			t.Run(o.String(), func(t *testing.T) {
				require.NotEmpty(t, o.APIVersion, "apiVersion")
				require.NotEmpty(t, o.Kind, "kind")
				require.NotEmpty(t, o.Metadata.Name, "metadata.name")
				require.Regexp(t, dnsLabel, o.Metadata.Name, "metadata.name is a DNS label")
				key := o.Kind + "/" + o.Metadata.Name
				require.False(t, seen[key], "%s twice in %s", key, file)
				seen[key] = true
				switch {
				case o.Kind == "Namespace":
					require.Empty(t, o.Metadata.Namespace)
				case file == ruleFile:
					// Generated without a namespace: applied with kubectl -n.
				default:
					require.True(t, namespacedKinds[o.Kind], "unexpected kind %s", o.Kind)
					require.Equal(t, "sentinel", o.Metadata.Namespace, "metadata.namespace")
				}
				if file != ruleFile {
					require.Equal(t, "sentinel", o.Metadata.Labels["app.kubernetes.io/name"], "label app.kubernetes.io/name")
				}
			})
		}
	}
}

func TestManifestKinds(t *testing.T) {
	count := map[string]int{}
	for _, o := range loadObjects(t, manifestFile) {
		count[o.APIVersion+" "+o.Kind]++
	}
	require.Equal(t, map[string]int{
		"v1 Namespace":        1,
		"v1 ServiceAccount":   1,
		"v1 ConfigMap":        1,
		"v1 Service":          2, // sentinel and the headless governing Service
		"apps/v1 StatefulSet": 1,
		"monitoring.coreos.com/v1 ServiceMonitor": 1,
	}, count, "%s holds no Secret: it is created with random values (README)", manifestFile)
	secrets := loadObjects(t, secretFile)
	require.Len(t, secrets, 1)
	require.Equal(t, "Secret", secrets[0].Kind)
}

func TestStatefulSet(t *testing.T) {
	m := loadManifests(t)
	sts, pod, c := m.sts, m.pod, m.main
	port := containerPortByName(t, c, "http")

	for _, tc := range []struct {
		name  string
		check func(t *testing.T)
	}{
		{"one replica", func(t *testing.T) {
			require.NotNil(t, sts.Spec.Replicas)
			require.Equal(t, 1, *sts.Spec.Replicas)
		}},
		{"selector matches the pod template", func(t *testing.T) {
			require.True(t, subset(sts.Spec.Selector.MatchLabels, sts.Spec.Template.Metadata.Labels))
		}},
		{"serviceName is a headless Service selecting the pods", func(t *testing.T) {
			for _, s := range m.services(t) {
				if s.Metadata.Name == sts.Spec.ServiceName {
					require.Equal(t, "None", s.Spec.ClusterIP)
					require.True(t, subset(s.Spec.Selector, sts.Spec.Template.Metadata.Labels))
					return
				}
			}
			require.Failf(t, "no governing Service", "Service %q is not in the manifests", sts.Spec.ServiceName)
		}},
		{"service account exists, no API token", func(t *testing.T) {
			_, ok := m.find("ServiceAccount", pod.ServiceAccountName)
			require.True(t, ok, "ServiceAccount %q", pod.ServiceAccountName)
			require.NotNil(t, pod.AutomountServiceAccountToken)
			require.False(t, *pod.AutomountServiceAccountToken)
		}},
		{"image is pinned", func(t *testing.T) {
			_, tag, ok := strings.Cut(c.Image[strings.LastIndex(c.Image, "/")+1:], ":")
			require.True(t, ok, "image %q has a tag", c.Image)
			require.NotEqual(t, "latest", tag)
		}},
		{"entrypoint is the image's", func(t *testing.T) {
			require.Empty(t, c.Command, "args only: the image's ENTRYPOINT is /bin/sentinel")
		}},
		{"port 9464 named http is the listen address and the binary's default", func(t *testing.T) {
			require.Equal(t, 9464, port)
			require.Equal(t, ":9464", flagValue(c.Args, "web.listen-address", binaryDefault(t, "web.listen-address")))
			require.Equal(t, ":9464", binaryDefault(t, "web.listen-address"))
		}},
		{"liveness probes /-/healthy on the http port", func(t *testing.T) {
			requireProbe(t, c, c.LivenessProbe, "/-/healthy", port)
		}},
		{"startup probes /-/healthy, for minutes", func(t *testing.T) {
			requireProbe(t, c, c.StartupProbe, "/-/healthy", port)
			budget := c.StartupProbe.PeriodSeconds * c.StartupProbe.FailureThreshold
			require.GreaterOrEqual(t, budget, 300, "restoring a large snapshot takes a while: allow 5 minutes or more")
		}},
		{"readiness probes /-/ready on the http port", func(t *testing.T) {
			requireProbe(t, c, c.ReadinessProbe, "/-/ready", port)
		}},
		{"grace period outlasts the shutdown timeout and the final snapshot", func(t *testing.T) {
			timeout := mustDuration(t, flagValue(c.Args, "web.shutdown-timeout", binaryDefault(t, "web.shutdown-timeout")))
			require.NotNil(t, pod.TerminationGracePeriodSeconds)
			grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
			require.Greater(t, grace, timeout+15*time.Second,
				"terminationGracePeriodSeconds must exceed --web.shutdown-timeout (%v) with room for the final snapshot", timeout)
		}},
		{"state on the volume claim template", func(t *testing.T) {
			require.Len(t, sts.Spec.VolumeClaimTemplates, 1)
			vct := sts.Spec.VolumeClaimTemplates[0]
			require.Equal(t, []string{"ReadWriteOnce"}, vct.Spec.AccessModes)
			require.Contains(t, vct.Spec.Resources.Requests, "storage")
			maxAgents := manifestConfig(t, m).Heartbeat.MaxAgents
			require.GreaterOrEqual(t, quantity(t, vct.Spec.Resources.Requests["storage"]),
				float64(2*snapshotBytesPerAgent*maxAgents+2*journalCompactAt),
				"two snapshots of max_agents=%d (during the atomic replacement) and the journal", maxAgents)
			mount := m.mount(t, vct.Metadata.Name)
			require.False(t, mount.ReadOnly)
			require.Equal(t, mount.MountPath, filepath.Clean(flagValue(c.Args, "storage.path", "")),
				"--storage.path is the volume claim's mount")
		}},
		{"configuration from the ConfigMap, updatable", func(t *testing.T) {
			file := flagValue(c.Args, "config.file", "")
			mount := m.mount(t, "config")
			require.Empty(t, mount.SubPath, "a subPath mount never sees ConfigMap updates: reload would not work")
			require.Equal(t, mount.MountPath, filepath.Dir(file))
			require.Contains(t, m.cfgMap.Data, filepath.Base(file))
		}},
		{"secrets from the Secret, updatable", func(t *testing.T) {
			for _, v := range pod.Volumes {
				if v.Secret != nil {
					mount := m.mount(t, v.Name)
					require.Empty(t, mount.SubPath, "a subPath mount never sees Secret updates")
					require.True(t, mount.ReadOnly)
				}
			}
		}},
		{"security context", func(t *testing.T) {
			psc, csc := pod.SecurityContext, c.SecurityContext
			require.True(t, isTrue(psc.RunAsNonRoot) || isTrue(csc.RunAsNonRoot), "runAsNonRoot")
			uid := csc.RunAsUser
			if uid == nil {
				uid = psc.RunAsUser
			}
			require.NotNil(t, uid, "runAsUser")
			require.Equal(t, dockerfileUID(t), *uid, "the Dockerfile's USER")
			require.NotNil(t, psc.FSGroup, "fsGroup makes the volume writable")
			require.True(t, isTrue(csc.ReadOnlyRootFilesystem), "readOnlyRootFilesystem")
			require.NotNil(t, csc.AllowPrivilegeEscalation)
			require.False(t, *csc.AllowPrivilegeEscalation)
			require.False(t, isTrue(csc.Privileged))
			require.Equal(t, []string{"ALL"}, csc.Capabilities.Drop)
			require.Empty(t, csc.Capabilities.Add)
			sp := csc.SeccompProfile
			if sp == nil {
				sp = psc.SeccompProfile
			}
			require.NotNil(t, sp, "seccompProfile (Pod Security Standard restricted)")
			require.Equal(t, "RuntimeDefault", sp.Type)
		}},
		{"resources fit max_agents", func(t *testing.T) {
			for _, r := range []string{"cpu", "memory"} {
				require.Contains(t, c.Resources.Requests, r)
				require.Contains(t, c.Resources.Limits, r)
				require.LessOrEqual(t, quantity(t, c.Resources.Requests[r]), quantity(t, c.Resources.Limits[r]), r)
			}
			limit := quantity(t, c.Resources.Limits["memory"])
			maxAgents := manifestConfig(t, m).Heartbeat.MaxAgents
			require.GreaterOrEqual(t, limit, float64(2*bytesPerAgent*maxAgents),
				"memory limit: ~%d B per agent for max_agents=%d, doubled for the garbage collector", bytesPerAgent, maxAgents)
			var memLimit string
			for _, e := range c.Env {
				if e.Name == "GOMEMLIMIT" {
					memLimit = e.Value
				}
			}
			require.NotEmpty(t, memLimit, "GOMEMLIMIT")
			soft := goMemLimit(t, memLimit)
			require.Less(t, soft, limit, "GOMEMLIMIT below the memory limit")
			require.GreaterOrEqual(t, soft, 0.75*limit, "GOMEMLIMIT close to the memory limit")
		}},
	} {
		t.Run(tc.name, tc.check)
	}
}

func TestServices(t *testing.T) {
	m := loadManifests(t)
	podLabels := m.sts.Spec.Template.Metadata.Labels
	rules, err := os.ReadFile(ruleFile)
	require.NoError(t, err)
	for _, s := range m.services(t) {
		t.Run(s.Metadata.Name, func(t *testing.T) {
			require.True(t, subset(s.Spec.Selector, podLabels), "the selector matches the pods")
			require.Len(t, s.Spec.Ports, 1)
			p := s.Spec.Ports[0]
			require.Equal(t, "http", p.Name)
			require.Equal(t, 9464, p.Port)
			require.Equal(t, "http", p.TargetPort, "targets the container's named port")
			containerPortByName(t, m.main, p.TargetPort)
		})
	}
	t.Run("the main Service is the job SentinelDown watches", func(t *testing.T) {
		main := mainService(t, m)
		require.Contains(t, string(rules), fmt.Sprintf(`up{job=%q}`, main.Metadata.Name),
			"the Prometheus Operator names the job after the Service")
	})
}

func TestServiceMonitor(t *testing.T) {
	m := loadManifests(t)
	mons := m.ofKind("ServiceMonitor")
	require.Len(t, mons, 1)
	require.Equal(t, "monitoring.coreos.com/v1", mons[0].APIVersion)
	var sm serviceMonitor
	require.NoError(t, mons[0].node.Decode(&sm))
	main := mainService(t, m)

	for _, tc := range []struct {
		name  string
		check func(t *testing.T)
	}{
		{"selects exactly the main Service", func(t *testing.T) {
			var selected []string
			for _, s := range m.services(t) {
				if subset(sm.Spec.Selector.MatchLabels, s.Metadata.Labels) {
					selected = append(selected, s.Metadata.Name)
				}
			}
			require.Equal(t, []string{main.Metadata.Name}, selected, "each pod scraped once")
			require.Contains(t, sm.Spec.NamespaceSelector.MatchNames, main.Metadata.Namespace)
		}},
		{"job is the Service's name", func(t *testing.T) {
			require.Empty(t, sm.Spec.JobLabel)
		}},
		{"one endpoint: the http port, the telemetry path", func(t *testing.T) {
			require.Len(t, sm.Spec.Endpoints, 1)
			ep := sm.Spec.Endpoints[0]
			require.Equal(t, main.Spec.Ports[0].Name, ep.Port)
			require.Equal(t, flagValue(m.main.Args, "web.telemetry-path", binaryDefault(t, "web.telemetry-path")), ep.Path)
			require.Contains(t, []string{"", "http"}, ep.Scheme, "TLS needs the probes changed too")
		}},
		{"interval and timeout allow a large scrape", func(t *testing.T) {
			ep := sm.Spec.Endpoints[0]
			interval, timeout := mustDuration(t, ep.Interval), mustDuration(t, ep.ScrapeTimeout)
			require.Equal(t, 15*time.Second, interval)
			require.GreaterOrEqual(t, timeout, 10*time.Second, "a scrape of 1M agents takes ~2 s")
			require.LessOrEqual(t, timeout, interval, "Prometheus rejects a timeout above the interval")
		}},
		{"agents' own pod and namespace labels kept", func(t *testing.T) {
			require.True(t, sm.Spec.Endpoints[0].HonorLabels)
		}},
	} {
		t.Run(tc.name, tc.check)
	}
}

// TestSecret checks that the example Secret, the configuration and the
// README's kubectl command name the same secret files.
func TestSecret(t *testing.T) {
	m := loadManifests(t)
	cfg := manifestConfig(t, m)
	mountPath := ""
	for _, v := range m.pod.Volumes {
		if v.Secret != nil {
			mountPath = m.mount(t, v.Name).MountPath
		}
	}
	var files []string
	files = append(files, cfg.AdminTokenFiles...)
	for _, tn := range cfg.Tenants {
		files = append(files, tn.APIKeyFiles...)
		files = append(files, tn.AdminTokenFiles...)
		if tn.Webhook != nil {
			files = append(files, tn.Webhook.SecretFiles...)
		}
	}
	files = append(files, cfg.Bridge.BearerTokenFile)
	keys := map[string]bool{}
	for _, f := range files {
		rel, err := filepath.Rel(mountPath, f)
		require.NoError(t, err)
		require.False(t, strings.Contains(rel, "/"), "%s is a file of the Secret mounted at %s", f, mountPath)
		keys[rel] = true
	}

	t.Run("every secret comes from a file", func(t *testing.T) {
		// Unmarshalled only: config.Load appends the files' secrets.
		var raw config.Config
		require.NoError(t, yaml.Unmarshal([]byte(m.cfgMap.Data[filepath.Base(flagValue(m.main.Args, "config.file", ""))]), &raw))
		require.Empty(t, raw.AdminTokens, "admin_tokens")
		require.Empty(t, raw.Bridge.BearerToken, "bridge.bearer_token")
		for _, tn := range raw.Tenants {
			require.Empty(t, tn.APIKeys, "tenant %s: api_keys", tn.ID)
			require.Empty(t, tn.AdminTokens, "tenant %s: admin_tokens", tn.ID)
			if tn.Webhook != nil {
				require.Empty(t, tn.Webhook.Secrets, "tenant %s: webhook.secrets", tn.ID)
			}
		}
	})
	t.Run("the Secret has exactly the keys the configuration reads", func(t *testing.T) {
		require.Equal(t, sortedKeys(keys), sortedKeys(m.secret.StringData))
	})
	t.Run("placeholders are marked and unique", func(t *testing.T) {
		seen := map[string]bool{}
		for k, v := range m.secret.StringData {
			require.Contains(t, v, "CHANGE-ME", k)
			require.False(t, seen[v], "%s: duplicate value", k)
			seen[v] = true
		}
	})
	t.Run("the README's kubectl create secret sets every key", func(t *testing.T) {
		readme, err := os.ReadFile(kubeREADME)
		require.NoError(t, err)
		cmd := regexp.MustCompile(`(?s)kubectl -n sentinel create secret generic ` + m.secName + ` \\\n(.*?)\n\s*kubectl`).FindSubmatch(readme)
		require.NotNil(t, cmd, "README has the kubectl create secret command")
		var literal []string
		for _, sub := range regexp.MustCompile(`--from-literal=([a-z0-9-]+)=`).FindAllSubmatch(cmd[1], -1) {
			literal = append(literal, string(sub[1]))
		}
		require.ElementsMatch(t, sortedKeys(keys), literal)
	})
}

// TestManifestRunsTheRealBinary runs sentinel the way the pod runs it, with
// the pod's paths mirrored in a temporary directory.
func TestManifestRunsTheRealBinary(t *testing.T) {
	m := loadManifests(t)
	env := newPodEnv(t, m)

	t.Run("config.check", func(t *testing.T) {
		code, out := runSentinel(t, append(env.args, "--config.check")...)
		require.Equal(t, 0, code, out)
		require.Contains(t, out, "SUCCESS")
	})
	t.Run("config.check fails without the Secret", func(t *testing.T) {
		bad := newPodEnv(t, m)
		require.NoError(t, os.RemoveAll(bad.secrets))
		code, out := runSentinel(t, append(bad.args, "--config.check")...)
		require.Equal(t, 1, code, out)
	})
	t.Run("serves, probes, reloads a rotated secret, stops with a snapshot", func(t *testing.T) {
		serveProbeReloadStop(t, m, env)
	})
}

func serveProbeReloadStop(t *testing.T, m *manifests, env *podEnv) {
	c := m.main
	proc := startPod(t, env.args)

	base := "http://" + env.addr
	client := &http.Client{Timeout: 5 * time.Second}
	call := func(method, path, token, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(context.Background(), method, base+path, strings.NewReader(body))
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	// The probes, as the kubelet sends them.
	require.Eventually(t, func() bool {
		conn, err := net.DialTimeout("tcp", env.addr, time.Second)
		if err == nil {
			conn.Close()
		}
		return err == nil
	}, 8*time.Second, 20*time.Millisecond, "sentinel listens")
	for _, p := range []*probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
		code, body := call(http.MethodGet, p.HTTPGet.Path, "", "")
		require.Equal(t, http.StatusOK, code, "%s: %s", p.HTTPGet.Path, body)
	}

	secretOf := func(key string) string { return m.secret.StringData[key] }
	// An agent of the example tenant registers with its API key file.
	code, body := call(http.MethodPost, "/api/v1/installations/agent-01/heartbeat", secretOf("acme-api-key"),
		`{"status":"healthy","heartbeat_interval_seconds":10}`)
	require.Equal(t, http.StatusOK, code, body)
	old := secretOf("admin-token")
	code, body = call(http.MethodGet, "/api/v1/installations", old, "")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `"agent-01"`)

	// Rotate the admin token as the kubelet would update the Secret's file,
	// then POST /-/reload with the (still valid) global admin token (README).
	rotated := "CHANGE-ME-rotated-admin-token"
	require.NoError(t, os.WriteFile(filepath.Join(env.secrets, "admin-token"), []byte(rotated+"\n"), 0o600))
	code, body = call(http.MethodPost, "/-/reload", "", "")
	require.Equal(t, http.StatusUnauthorized, code, "reload needs a global admin token: %s", body)
	code, body = call(http.MethodPost, "/-/reload", old, "")
	require.Equal(t, http.StatusOK, code, body)
	code, body = call(http.MethodGet, "/api/v1/installations", old, "")
	require.Contains(t, []int{http.StatusUnauthorized, http.StatusForbidden}, code, body)
	code, body = call(http.MethodGet, "/api/v1/installations", rotated, "")
	require.Equal(t, http.StatusOK, code, body)

	// SIGTERM, as the kubelet stops the pod: exit 0 within the grace
	// period, the final snapshot on the volume.
	start := time.Now()
	grace := time.Duration(*m.pod.TerminationGracePeriodSeconds) * time.Second
	require.NoError(t, proc.terminate(t, min(grace, 10*time.Second)), "clean exit")
	t.Logf("stopped in %v", time.Since(start).Round(time.Millisecond))
	for _, f := range []string{"agents.snapshot", "ledger.journal", "token.key", "LOCK"} {
		require.FileExists(t, filepath.Join(env.storage, f))
	}
}

// manifestConfig parses the ConfigMap's configuration as sentinel does,
// with the Secret's files in place.
func manifestConfig(t *testing.T, m *manifests) *config.Config {
	t.Helper()
	file := flagValue(m.main.Args, "config.file", "")
	content := m.cfgMap.Data[filepath.Base(file)]
	require.NotEmpty(t, content)
	env := newPodEnv(t, m)
	cfg, err := config.Load(env.root + file)
	require.NoError(t, err)
	// Report the paths as the pod sees them.
	unroot := func(p string) string { return strings.TrimPrefix(p, env.root) }
	for i, f := range cfg.AdminTokenFiles {
		cfg.AdminTokenFiles[i] = unroot(f)
	}
	for _, tn := range cfg.Tenants {
		for i, f := range tn.APIKeyFiles {
			tn.APIKeyFiles[i] = unroot(f)
		}
		for i, f := range tn.AdminTokenFiles {
			tn.AdminTokenFiles[i] = unroot(f)
		}
		if tn.Webhook != nil {
			for i, f := range tn.Webhook.SecretFiles {
				tn.Webhook.SecretFiles[i] = unroot(f)
			}
		}
	}
	cfg.Bridge.BearerTokenFile = unroot(cfg.Bridge.BearerTokenFile)
	return cfg
}

func mainService(t *testing.T, m *manifests) service {
	t.Helper()
	for _, s := range m.services(t) {
		if s.Spec.ClusterIP != "None" {
			return s
		}
	}
	require.Fail(t, "no non-headless Service")
	return service{}
}

func containerPortByName(t *testing.T, c container, name string) int {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	require.Failf(t, "no container port", "container %s has no port named %q", c.Name, name)
	return 0
}

func requireProbe(t *testing.T, c container, p *probe, path string, port int) {
	t.Helper()
	require.NotNil(t, p)
	require.NotNil(t, p.HTTPGet, "an httpGet probe")
	require.Equal(t, path, p.HTTPGet.Path)
	require.Contains(t, []string{"", "HTTP"}, p.HTTPGet.Scheme)
	probePort, err := strconv.Atoi(p.HTTPGet.Port)
	if err != nil {
		probePort = containerPortByName(t, c, p.HTTPGet.Port)
	}
	require.Equal(t, port, probePort)
}

func isTrue(b *bool) bool { return b != nil && *b }

package deploy

import (
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// Paths of the compose stack and the Grafana provisioning.
const (
	composeDir        = "compose"
	composeFile       = "compose/compose.yaml"
	grafanaProvider   = "grafana/provisioning/dashboards/sentinel.yml"
	grafanaDatasource = "grafana/provisioning/datasources/prometheus.yml"
)

// repoRoot is the repository's root, absolute.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	return root
}

// loadCompose loads compose.yaml as `docker compose` would with the given
// profiles (none: those of compose/.env), validated against the Compose
// specification's schema and checked for consistency (every secret,
// volume and network a service uses is declared).
func loadCompose(t *testing.T, profiles ...string) *types.Project {
	t.Helper()
	opts := []cli.ProjectOptionsFn{
		cli.WithWorkingDirectory(composeDir),
		// Only the stack's own .env: the test's environment must not
		// change what the file means.
		cli.WithEnv(nil),
		cli.WithEnvFiles(),
		cli.WithDotEnv,
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	}
	if len(profiles) > 0 {
		opts = append(opts, cli.WithProfiles(profiles))
	} else {
		opts = append(opts, cli.WithDefaultProfiles())
	}
	po, err := cli.NewProjectOptions([]string{composeFile}, opts...)
	require.NoError(t, err)
	p, err := po.LoadProject(t.Context())
	require.NoError(t, err, "%s is not a valid Compose file", composeFile)
	return p
}

func serviceNames(p *types.Project) []string {
	var names []string
	for name := range p.Services {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

func TestComposeProfiles(t *testing.T) {
	shared := []string{"alertmanager", "grafana", "prometheus", "webhook-sink"}
	for _, tc := range []struct {
		profiles []string
		want     []string
	}{
		{nil, append([]string{"sentinel"}, shared...)}, // compose/.env
		{[]string{"embedded"}, append([]string{"sentinel"}, shared...)},
		{[]string{"replicated"}, append([]string{"postgres", "proxy", "sentinel-replica"}, shared...)},
	} {
		t.Run(strings.Join(append([]string{"profiles"}, tc.profiles...), " "), func(t *testing.T) {
			p := loadCompose(t, tc.profiles...)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			require.Equal(t, want, serviceNames(p))
			// Exactly one service answers as sentinel-api and publishes 9464.
			var api []string
			for name, s := range p.Services {
				if n := s.Networks["default"]; n != nil && slices.Contains(n.Aliases, "sentinel-api") {
					api = append(api, name)
				}
				for _, port := range s.Ports {
					if port.Target == 9464 {
						require.Equal(t, "9464", port.Published, name)
						require.Empty(t, port.HostIP, "%s: agents on other machines reach sentinel", name)
					}
				}
			}
			require.Len(t, api, 1, "one service is sentinel-api: %v", api)
		})
	}
	t.Run("three replicas", func(t *testing.T) {
		s := loadCompose(t, "replicated").Services["sentinel-replica"]
		require.NotNil(t, s.Deploy)
		require.NotNil(t, s.Deploy.Replicas)
		require.Equal(t, 3, *s.Deploy.Replicas)
	})
	t.Run("only sentinel on every interface", func(t *testing.T) {
		for _, prof := range []string{"embedded", "replicated"} {
			for name, s := range loadCompose(t, prof).Services {
				for _, port := range s.Ports {
					if port.Target != 9464 {
						require.Equal(t, "127.0.0.1", port.HostIP, "%s publishes %d to the network without authentication", name, port.Target)
					}
				}
			}
		}
	})
}

// TestComposeMounts checks that every file the stack mounts or hands over
// as a secret exists in the repository.
func TestComposeMounts(t *testing.T) {
	root := repoRoot(t)
	for _, prof := range []string{"embedded", "replicated"} {
		p := loadCompose(t, prof)
		for name, s := range p.Services {
			for _, v := range s.Volumes {
				if v.Type != types.VolumeTypeBind {
					require.Contains(t, p.Volumes, v.Source, "%s: volume %s", name, v.Source)
					continue
				}
				rel, err := filepath.Rel(root, v.Source)
				require.NoError(t, err)
				require.False(t, strings.HasPrefix(rel, ".."), "%s mounts %s, outside the repository", name, v.Source)
				_, err = os.Stat(v.Source)
				require.NoError(t, err, "%s mounts %s", name, rel)
				require.True(t, v.ReadOnly, "%s mounts %s writable", name, rel)
			}
			for _, sec := range s.Secrets {
				def, ok := p.Secrets[sec.Source]
				require.True(t, ok, "%s: secret %s", name, sec.Source)
				require.FileExists(t, def.File, "%s: secret %s", name, sec.Source)
			}
		}
	}
}

// mountTarget returns the host path a service mounts at target.
func mountTarget(t *testing.T, s types.ServiceConfig, target string) string {
	t.Helper()
	for _, v := range s.Volumes {
		if v.Target == target {
			return v.Source
		}
	}
	require.Failf(t, "no mount", "%s mounts nothing at %s", s.Name, target)
	return ""
}

// containerFS mirrors a service's container file system under a temporary
// root: its bind mounts and its secrets (at /run/secrets/<name>), so that
// its configuration can be checked with its own paths prefixed by root.
func containerFS(t *testing.T, p *types.Project, s types.ServiceConfig) string {
	t.Helper()
	root := t.TempDir()
	cp := func(src, dst string) {
		fi, err := os.Stat(src)
		require.NoError(t, err)
		if fi.IsDir() {
			require.NoError(t, os.CopyFS(dst, os.DirFS(src)))
			return
		}
		b, err := os.ReadFile(src)
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
		require.NoError(t, os.WriteFile(dst, b, 0o644))
	}
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeBind {
			cp(v.Source, root+v.Target)
		} else {
			require.NoError(t, os.MkdirAll(root+v.Target, 0o755))
		}
	}
	for _, sec := range s.Secrets {
		target := sec.Target
		if target == "" {
			target = sec.Source
		}
		if !filepath.IsAbs(target) {
			target = "/run/secrets/" + target
		}
		b, err := os.ReadFile(p.Secrets[sec.Source].File)
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Dir(root+target), 0o755))
		require.NoError(t, os.WriteFile(root+target, b, 0o600))
	}
	return root
}

// rootArgs prefixes the absolute paths of --flag=/path arguments with root.
func rootArgs(root string, args []string) []string {
	var out []string
	for _, a := range args {
		if name, value, ok := strings.Cut(a, "="); ok && strings.HasPrefix(value, "/") {
			a = name + "=" + root + value
		}
		out = append(out, a)
	}
	return out
}

// rootFile rewrites, in the file at root+path, every absolute path under
// one of dirs to its place under root.
func rootFile(t *testing.T, root, path string, dirs ...string) {
	t.Helper()
	b, err := os.ReadFile(root + path)
	require.NoError(t, err)
	s := string(b)
	for _, d := range dirs {
		s = strings.ReplaceAll(s, " "+d, " "+root+d)
	}
	require.NoError(t, os.WriteFile(root+path, []byte(s), 0o644))
}

// TestComposeSentinelConfig runs each sentinel service's configuration, with
// its secrets, through the real binary's --config.check.
func TestComposeSentinelConfig(t *testing.T) {
	for _, tc := range []struct{ profile, service string }{
		{"embedded", "sentinel"},
		{"replicated", "sentinel-replica"},
	} {
		t.Run(tc.service, func(t *testing.T) {
			p := loadCompose(t, tc.profile)
			s := p.Services[tc.service]
			require.Empty(t, s.Entrypoint, "the image's ENTRYPOINT is sentinel")
			cfgPath := flagValue(s.Command, "config.file", "")
			require.NotEmpty(t, cfgPath)
			require.Equal(t, ":9464", flagValue(s.Command, "web.listen-address", binaryDefault(t, "web.listen-address")))
			require.True(t, s.ReadOnly, "read-only root file system")
			require.Equal(t, "/data", flagValue(s.Command, "storage.path", ""), "the image's VOLUME")

			root := containerFS(t, p, s)
			rootFile(t, root, cfgPath, "/run/secrets/")
			code, out := runSentinel(t, append(rootArgs(root, s.Command), "--config.check")...)
			require.Equal(t, 0, code, out)
			require.Contains(t, out, "SUCCESS")

			// Every *_file is a secret the service is given.
			b, err := os.ReadFile(mountTarget(t, s, cfgPath))
			require.NoError(t, err)
			for _, f := range secretFiles(t, string(b)) {
				require.True(t, strings.HasPrefix(f, "/run/secrets/"), "%s: secrets come from compose secrets", f)
				require.True(t, slices.ContainsFunc(s.Secrets, func(sec types.ServiceSecretConfig) bool {
					return sec.Source == filepath.Base(f)
				}), "%s reads %s, a secret it is not given", tc.service, f)
			}
			if tc.profile == "replicated" {
				require.Contains(t, string(b), "dsn_file: /run/secrets/postgres-dsn")
			}
		})
	}
}

// TestComposeWiring checks that the services point at each other: the
// bridge receiver at sentinel-api with sentinel's bridge token, the tenant
// webhook at the sink, Prometheus at Alertmanager and at every sentinel,
// Grafana at Prometheus and at the dashboards, the DSN at PostgreSQL.
func TestComposeWiring(t *testing.T) {
	emb, rep := loadCompose(t, "embedded"), loadCompose(t, "replicated")
	secretOf := func(p *types.Project, name string) string {
		b, err := os.ReadFile(p.Secrets[name].File)
		require.NoError(t, err)
		return strings.TrimSpace(string(b))
	}

	t.Run("alertmanager", func(t *testing.T) {
		s := emb.Services["alertmanager"]
		root := containerFS(t, emb, s)
		cfgPath := flagValue(s.Command, "config.file", "")
		rootFile(t, root, cfgPath, "/run/secrets/")
		out, err := exec.Command(lookTool(t, "amtool"), "check-config", root+cfgPath).CombinedOutput()
		require.NoError(t, err, string(out))

		var cfg struct {
			Receivers []struct {
				Name           string `yaml:"name"`
				WebhookConfigs []struct {
					URL        string `yaml:"url"`
					HTTPConfig struct {
						Authorization struct {
							CredentialsFile string `yaml:"credentials_file"`
						} `yaml:"authorization"`
					} `yaml:"http_config"`
				} `yaml:"webhook_configs"`
			} `yaml:"receivers"`
		}
		b, err := os.ReadFile(mountTarget(t, s, cfgPath))
		require.NoError(t, err)
		require.NoError(t, yaml.Unmarshal(b, &cfg))
		var bridge, sink bool
		for _, r := range cfg.Receivers {
			for _, w := range r.WebhookConfigs {
				u, err := url.Parse(w.URL)
				require.NoError(t, err)
				switch u.Hostname() {
				case "sentinel-api":
					bridge = true
					require.Equal(t, "/api/v1/alertmanager", u.Path)
					require.Equal(t, "9464", u.Port())
					// Alertmanager's token file is sentinel's bridge token.
					cred := w.HTTPConfig.Authorization.CredentialsFile
					require.Equal(t, "/run/secrets/bridge-token", cred)
					require.True(t, slices.ContainsFunc(s.Secrets, func(sec types.ServiceSecretConfig) bool { return sec.Source == "bridge-token" }),
						"Alertmanager is given the bridge-token secret")
					for _, p := range []*types.Project{emb, rep} {
						for _, name := range []string{"sentinel", "sentinel-replica"} {
							if sv, ok := p.Services[name]; ok {
								b, err := os.ReadFile(mountTarget(t, sv, flagValue(sv.Command, "config.file", "")))
								require.NoError(t, err)
								require.Contains(t, string(b), "bearer_token_file: "+cred)
							}
						}
					}
				default:
					require.Contains(t, emb.Services, u.Hostname(), "receiver %s: %s is no service", r.Name, w.URL)
					sink = true
				}
			}
		}
		require.True(t, bridge, "a receiver for sentinel's bridge")
		require.True(t, sink, "a receiver for the webhook sink")
	})

	t.Run("prometheus", func(t *testing.T) {
		s := emb.Services["prometheus"]
		root := containerFS(t, emb, s)
		cfgPath := flagValue(s.Command, "config.file", "")
		rootFile(t, root, cfgPath, "/etc/prometheus/")
		out, err := exec.Command(lookTool(t, "promtool"), "check", "config", root+cfgPath).CombinedOutput()
		require.NoError(t, err, string(out))
		require.Contains(t, string(out), "SUCCESS: 1 rule files found")

		b, err := os.ReadFile(mountTarget(t, s, cfgPath))
		require.NoError(t, err)
		var cfg struct {
			RuleFiles []string `yaml:"rule_files"`
			Alerting  struct {
				Alertmanagers []struct {
					StaticConfigs []struct {
						Targets []string `yaml:"targets"`
					} `yaml:"static_configs"`
				} `yaml:"alertmanagers"`
			} `yaml:"alerting"`
			ScrapeConfigs []struct {
				JobName      string `yaml:"job_name"`
				DNSSDConfigs []struct {
					Names []string `yaml:"names"`
					Port  int      `yaml:"port"`
				} `yaml:"dns_sd_configs"`
			} `yaml:"scrape_configs"`
		}
		require.NoError(t, yaml.Unmarshal(b, &cfg))
		require.Len(t, cfg.RuleFiles, 1)
		rules, err := filepath.Abs(rulesSource)
		require.NoError(t, err)
		require.Equal(t, rules, mountTarget(t, s, cfg.RuleFiles[0]), "the repository's rules")
		require.Equal(t, []string{"alertmanager:9093"}, cfg.Alerting.Alertmanagers[0].StaticConfigs[0].Targets)
		var names []string
		for _, sc := range cfg.ScrapeConfigs {
			if sc.JobName == "sentinel" {
				for _, d := range sc.DNSSDConfigs {
					require.Equal(t, 9464, d.Port)
					names = append(names, d.Names...)
				}
			}
		}
		require.ElementsMatch(t, []string{"sentinel", "sentinel-replica"}, names,
			"job sentinel (SentinelDown watches it) scrapes each sentinel, never the proxy")
		require.Contains(t, rep.Services, "sentinel-replica")
		require.Contains(t, emb.Services, "sentinel")
	})

	t.Run("grafana", func(t *testing.T) {
		s := emb.Services["grafana"]
		prov := mountTarget(t, s, "/etc/grafana/provisioning")
		abs, err := filepath.Abs("grafana/provisioning")
		require.NoError(t, err)
		require.Equal(t, abs, prov, "deploy/grafana/provisioning")
		var provider struct {
			Providers []struct {
				Folder  string `yaml:"folder"`
				Type    string `yaml:"type"`
				Options struct {
					Path string `yaml:"path"`
				} `yaml:"options"`
			} `yaml:"providers"`
		}
		readYAML(t, grafanaProvider, &provider)
		require.Len(t, provider.Providers, 1)
		dashDir, err := filepath.Abs("../dashboards")
		require.NoError(t, err)
		require.Equal(t, dashDir, mountTarget(t, s, provider.Providers[0].Options.Path), "the provider reads dashboards/")
		home := s.Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
		require.NotNil(t, home)
		require.FileExists(t, filepath.Join(dashDir, strings.TrimPrefix(*home, provider.Providers[0].Options.Path)))

		var ds struct {
			Datasources []struct {
				Type      string `yaml:"type"`
				URL       string `yaml:"url"`
				IsDefault bool   `yaml:"isDefault"`
			} `yaml:"datasources"`
		}
		readYAML(t, grafanaDatasource, &ds)
		require.Len(t, ds.Datasources, 1)
		require.Equal(t, "prometheus", ds.Datasources[0].Type, "the dashboards' ${datasource} variable lists Prometheus data sources")
		require.True(t, ds.Datasources[0].IsDefault)
		u, err := url.Parse(ds.Datasources[0].URL)
		require.NoError(t, err)
		require.Contains(t, emb.Services, u.Hostname())
		require.Equal(t, "9090", u.Port())
		pw := s.Environment["GF_SECURITY_ADMIN_PASSWORD__FILE"]
		require.NotNil(t, pw)
		require.Equal(t, "/run/secrets/grafana-admin-password", *pw)
	})

	t.Run("tenant webhook to the sink", func(t *testing.T) {
		s := emb.Services["sentinel"]
		b, err := os.ReadFile(mountTarget(t, s, flagValue(s.Command, "config.file", "")))
		require.NoError(t, err)
		var cfg struct {
			Tenants []struct {
				Webhook struct {
					URL string `yaml:"url"`
				} `yaml:"webhook"`
			} `yaml:"tenants"`
		}
		require.NoError(t, yaml.Unmarshal(b, &cfg))
		for _, tn := range cfg.Tenants {
			u, err := url.Parse(tn.Webhook.URL)
			require.NoError(t, err)
			require.Equal(t, "webhook-sink", u.Hostname())
		}
	})

	t.Run("postgres", func(t *testing.T) {
		dsn, err := url.Parse(secretOf(rep, "postgres-dsn"))
		require.NoError(t, err)
		pg := rep.Services["postgres"]
		require.Equal(t, "postgres", dsn.Hostname())
		pw, _ := dsn.User.Password()
		require.Equal(t, secretOf(rep, "postgres-password"), pw, "secrets/postgres-dsn holds secrets/postgres-password")
		require.Equal(t, *pg.Environment["POSTGRES_USER"], dsn.User.Username())
		require.Equal(t, *pg.Environment["POSTGRES_DB"], strings.TrimPrefix(dsn.Path, "/"))
		require.Equal(t, "/run/secrets/postgres-password", *pg.Environment["POSTGRES_PASSWORD_FILE"])
		require.NotNil(t, pg.HealthCheck)
		dep, ok := rep.Services["sentinel-replica"].DependsOn["postgres"]
		require.True(t, ok)
		require.Equal(t, types.ServiceConditionHealthy, dep.Condition)
	})

	t.Run("proxy", func(t *testing.T) {
		s := rep.Services["proxy"]
		var conf string
		for _, v := range s.Volumes {
			if strings.HasPrefix(v.Target, "/etc/nginx/") {
				b, err := os.ReadFile(v.Source)
				require.NoError(t, err)
				conf = string(b)
			}
		}
		m := regexp.MustCompile(`(?m)^\s*listen (\d+);`).FindStringSubmatch(conf)
		require.NotNil(t, m, "nginx listens")
		require.Equal(t, "9464", m[1])
		require.Regexp(t, `http://sentinel-replica:9464;`, conf, "proxies to the replicas")
		require.Contains(t, conf, "resolver 127.0.0.11", "Docker's DNS, looked up again as replicas restart")
	})
}

// TestComposeSecretsAreDistinct checks the demo secrets: marked as such and
// never one value for two purposes (sentinel would refuse it).
func TestComposeSecretsAreDistinct(t *testing.T) {
	p := loadCompose(t, "replicated")
	seen := map[string]string{}
	for name, def := range p.Secrets {
		b, err := os.ReadFile(def.File)
		require.NoError(t, err)
		v := strings.TrimSpace(string(b))
		require.Contains(t, v, "CHANGE-ME", "%s: demo values say so", name)
		if name == "postgres-dsn" {
			continue // holds postgres-password
		}
		require.Empty(t, seen[v], "%s and %s share a value", name, seen[v])
		seen[v] = name
	}
}

// grafanaFolder is the folder of deploy/grafana's dashboard provider, which
// the chart's dashboard ConfigMaps name for the Grafana sidecar.
func grafanaFolder(t *testing.T) string {
	t.Helper()
	var provider struct {
		Providers []struct {
			Folder string `yaml:"folder"`
		} `yaml:"providers"`
	}
	readYAML(t, grafanaProvider, &provider)
	require.Len(t, provider.Providers, 1)
	return provider.Providers[0].Folder
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	require.NoError(t, dec.Decode(v), path)
}

// lookTool finds a Prometheus or Alertmanager tool on PATH, or fails: a
// missing tool is an error, never a skip (`make test-deps` installs it).
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	require.NoError(t, err, "%s not found: run `make test-deps`", name)
	return p
}

// TestComposeREADME checks the README's compose section against the stack:
// the URLs it lists are the ports the stack publishes, and the demo keys it
// quotes are those of secrets/.
func TestComposeREADME(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	require.NoError(t, err)
	section := regexp.MustCompile(`(?s)### Docker Compose\n(.*?)\n### `).FindSubmatch(readme)
	require.NotNil(t, section, "README.md has a ### Docker Compose section")
	text := string(section[1])

	published := map[string]bool{}
	for _, s := range loadCompose(t, "embedded").Services {
		for _, p := range s.Ports {
			published[p.Published] = true
		}
	}
	urls := regexp.MustCompile(`http://localhost:(\d+)`).FindAllStringSubmatch(text, -1)
	require.NotEmpty(t, urls)
	var listed []string
	for _, u := range urls {
		require.True(t, published[u[1]], "README lists localhost:%s, which the stack does not publish", u[1])
		listed = append(listed, u[1])
	}
	for port := range published {
		require.Contains(t, listed, port, "the stack publishes %s, which the README does not list", port)
	}

	p := loadCompose(t, "embedded")
	keys := regexp.MustCompile(`(KEY|ADMIN)=(\S+)`).FindAllStringSubmatch(text, -1)
	require.Len(t, keys, 2, "the README quotes the demo KEY and ADMIN")
	for _, m := range keys {
		file := map[string]string{"KEY": "demo-api-key", "ADMIN": "demo-admin-token"}[m[1]]
		b, err := os.ReadFile(p.Secrets[file].File)
		require.NoError(t, err)
		require.Equal(t, strings.TrimSpace(string(b)), strings.TrimRight(m[2], "`.,"), "README's %s is secrets/%s", m[1], file)
	}
}

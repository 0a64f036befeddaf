package deploy

import (
	"net"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/config"
)

// The example Alertmanager configurations.
const (
	amConfig      = "alertmanager/alertmanager.yml"
	amLocalConfig = "alertmanager/alertmanager.local.yml"
)

// The bridge's endpoint on sentinel.
const bridgePath = "/api/v1/alertmanager"

// amRoute and amReceiver are the parts of an Alertmanager configuration the
// wiring tests read; yaml.v3 ignores the rest.
type amRoute struct {
	Receiver       string    `yaml:"receiver"`
	Matchers       []string  `yaml:"matchers"`
	GroupBy        []string  `yaml:"group_by"`
	GroupWait      string    `yaml:"group_wait"`
	GroupInterval  string    `yaml:"group_interval"`
	RepeatInterval string    `yaml:"repeat_interval"`
	Continue       bool      `yaml:"continue"`
	Routes         []amRoute `yaml:"routes"`
}

type amWebhook struct {
	URL          string `yaml:"url"`
	SendResolved *bool  `yaml:"send_resolved"`
	MaxAlerts    *int   `yaml:"max_alerts"`
	HTTPConfig   struct {
		Authorization struct {
			Type            string `yaml:"type"`
			Credentials     string `yaml:"credentials"`
			CredentialsFile string `yaml:"credentials_file"`
		} `yaml:"authorization"`
	} `yaml:"http_config"`
}

type amReceiver struct {
	Name           string      `yaml:"name"`
	WebhookConfigs []amWebhook `yaml:"webhook_configs"`
	// Any other integration makes the receiver need a secret or a service.
	PagerdutyConfigs []any `yaml:"pagerduty_configs"`
	SlackConfigs     []any `yaml:"slack_configs"`
}

type amFile struct {
	Route     amRoute      `yaml:"route"`
	Receivers []amReceiver `yaml:"receivers"`
}

// bridgeWebhook returns the receiver named sentinel-bridge's only webhook.
func (f amFile) bridgeWebhook(t *testing.T) amWebhook {
	t.Helper()
	for _, r := range f.Receivers {
		if r.Name == "sentinel-bridge" {
			require.Len(t, r.WebhookConfigs, 1, "the bridge receiver has one webhook_config")
			require.Empty(t, r.PagerdutyConfigs)
			require.Empty(t, r.SlackConfigs)
			return r.WebhookConfigs[0]
		}
	}
	t.Fatal("no sentinel-bridge receiver")
	return amWebhook{}
}

// bridgeRoutes returns the top-level routes to the bridge by their matchers.
func (f amFile) bridgeRoutes() map[string]amRoute {
	out := map[string]amRoute{}
	for _, r := range f.Route.Routes {
		if r.Receiver == "sentinel-bridge" {
			out[strings.Join(r.Matchers, ",")] = r
		}
	}
	return out
}

func duration(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := model.ParseDuration(s)
	require.NoError(t, err, s)
	return time.Duration(d)
}

// TestAlertmanagerBridgeWiring checks, in both example configurations, what
// the bridge relies on: every agent alert and the Watchdog reach it, one
// group per agent and alert, resolved notifications too, never truncated,
// with a bearer token, and the Watchdog often enough for sentinel's
// bridge.watchdog.timeout.
func TestAlertmanagerBridgeWiring(t *testing.T) {
	example, err := config.Load(exampleConfig)
	require.NoError(t, err)
	watchdogTimeout := time.Duration(example.Bridge.Watchdog.Timeout)
	require.Positive(t, watchdogTimeout, "the example config watches the Watchdog")

	for _, path := range []string{amConfig, amLocalConfig} {
		t.Run(path, func(t *testing.T) {
			var f amFile
			readYAML(t, path, &f)

			w := f.bridgeWebhook(t)
			u, err := url.Parse(w.URL)
			require.NoError(t, err)
			require.Equal(t, bridgePath, u.Path)
			require.NotNil(t, w.SendResolved)
			require.True(t, *w.SendResolved, "send_resolved")
			require.NotNil(t, w.MaxAlerts, "max_alerts must be set, to 0")
			require.Zero(t, *w.MaxAlerts, "max_alerts: 0 never truncates a group")
			require.Equal(t, "Bearer", w.HTTPConfig.Authorization.Type)

			routes := f.bridgeRoutes()
			agents, ok := routes[`alertname=~"AgentSilent|AgentZombie"`]
			require.True(t, ok, "a bridge route for the agent alerts: %v", routes)
			require.ElementsMatch(t, []string{"tenant", "agent_id", "alertname"}, agents.GroupBy)
			require.Zero(t, duration(t, agents.GroupWait), "agent alerts reach the bridge at once")
			require.True(t, agents.Continue, "agent alerts go on to a human after the bridge")

			watchdog, ok := routes[`alertname="Watchdog"`]
			require.True(t, ok, "a bridge route for the Watchdog: %v", routes)
			require.False(t, watchdog.Continue, "the Watchdog goes to the bridge only")
			// Alertmanager repeats on a group_interval tick once
			// repeat_interval has passed.
			every := max(duration(t, watchdog.GroupInterval), duration(t, watchdog.RepeatInterval))
			require.LessOrEqual(t, 2*every, watchdogTimeout,
				"the Watchdog reaches the bridge every %s: too rarely for bridge.watchdog.timeout %s", every, watchdogTimeout)
		})
	}

	t.Run("production reads the token from a file", func(t *testing.T) {
		var f amFile
		readYAML(t, amConfig, &f)
		a := f.bridgeWebhook(t).HTTPConfig.Authorization
		require.Empty(t, a.Credentials)
		require.NotEmpty(t, a.CredentialsFile)
	})

	// The local variant must work as is next to `make run` and `make demo`:
	// sentinel's default port, the example config's demo bridge token, and
	// the local receiver on the demo sink, which also serves the example
	// config's tenant webhook.
	t.Run("local works as is", func(t *testing.T) {
		var f amFile
		readYAML(t, amLocalConfig, &f)
		w := f.bridgeWebhook(t)
		u, err := url.Parse(w.URL)
		require.NoError(t, err)
		_, defaultPort, err := net.SplitHostPort(binaryDefault(t, "web.listen-address"))
		require.NoError(t, err)
		require.Equal(t, "127.0.0.1", u.Hostname())
		require.Equal(t, defaultPort, u.Port())
		require.Empty(t, w.HTTPConfig.Authorization.CredentialsFile, "no secret file to create")
		require.Equal(t, string(example.Bridge.BearerToken), w.HTTPConfig.Authorization.Credentials,
			"the local bridge token is sentinel.example.yml's bridge.bearer_token")

		require.Len(t, example.Tenants, 1)
		require.NotNil(t, example.Tenants[0].Webhook)
		hook, err := url.Parse(example.Tenants[0].Webhook.URL)
		require.NoError(t, err)
		var local []amWebhook
		for _, r := range f.Receivers {
			require.Empty(t, r.PagerdutyConfigs, "receiver %s needs PagerDuty", r.Name)
			require.Empty(t, r.SlackConfigs, "receiver %s needs Slack", r.Name)
			if r.Name != "sentinel-bridge" {
				local = append(local, r.WebhookConfigs...)
			}
		}
		require.Len(t, local, 1, "one local receiver")
		lu, err := url.Parse(local[0].URL)
		require.NoError(t, err)
		require.Equal(t, hook.Host, lu.Host, "the local receiver is the demo sink, where the tenant webhook goes")
	})
}

// TestAlertmanagerLocalConfig runs the real amtool on the laptop variant:
// valid, and who hears about what.
func TestAlertmanagerLocalConfig(t *testing.T) {
	amtool := lookTool(t, "amtool")
	out, err := exec.Command(amtool, "check-config", amLocalConfig).CombinedOutput()
	require.NoError(t, err, string(out))

	for _, tc := range []struct {
		labels    []string
		receivers []string
	}{
		{[]string{"alertname=AgentZombie", "severity=critical", "state=ZOMBIE", "tenant=demo", "agent_id=a1"}, []string{"sentinel-bridge", "local"}},
		{[]string{"alertname=AgentSilent", "severity=warning", "state=SILENT", "tenant=demo", "agent_id=a1"}, []string{"sentinel-bridge", "local"}},
		{[]string{"alertname=Watchdog", "severity=none"}, []string{"sentinel-bridge"}},
		{[]string{"alertname=SentinelDown", "severity=critical", "job=sentinel"}, []string{"local"}},
		{[]string{"alertname=SentinelWebhookDeliveryFailing", "severity=warning", "job=sentinel"}, []string{"local"}},
	} {
		t.Run(tc.labels[0], func(t *testing.T) {
			args := append([]string{"config", "routes", "test", "--config.file=" + amLocalConfig}, tc.labels...)
			out, err := exec.Command(amtool, args...).Output()
			require.NoError(t, err, string(out))
			require.Equal(t, tc.receivers, strings.Split(strings.TrimSpace(string(out)), ","), "receivers of %v", tc.labels)
		})
	}
}

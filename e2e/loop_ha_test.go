package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agentsentinel/sentinel/internal/testutil"
)

// roundRobin is the load balancer in front of the replicas: each request
// goes to the next replica, and to the one after when a replica refuses the
// connection (it is down), as a load balancer's health checks would do.
type roundRobin struct {
	backends []string
	client   *http.Client

	mu   sync.Mutex
	next int
}

func (rr *roundRobin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	rr.mu.Lock()
	first := rr.next
	rr.next = (rr.next + 1) % len(rr.backends)
	rr.mu.Unlock()
	var lastErr error
	for i := range rr.backends {
		backend := rr.backends[(first+i)%len(rr.backends)]
		req, err := http.NewRequestWithContext(r.Context(), r.Method, backend+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		req.Header = r.Header.Clone()
		resp, err := rr.client.Do(req)
		if err != nil {
			lastErr = err
			continue
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		return
	}
	http.Error(w, fmt.Sprintf("no replica answered: %v", lastErr), http.StatusBadGateway)
}

// TestLoopReplicas runs the loop highly available: three sentinel replicas
// on one PostgreSQL behind a round-robin proxy (agents and Alertmanagers go
// through it), two Alertmanagers clustered over loopback, two Prometheus
// servers each scraping every replica and notifying both Alertmanagers. A
// replica is killed mid-run; the customer must see every transition exactly
// once, as with one sentinel.
func TestLoopReplicas(t *testing.T) {
	t.Parallel()
	start := time.Now()
	s, promBin, rulesFile := newLoopStack(t)
	dsnFile := filepath.Join(s.dir, "postgres-dsn")
	require.NoError(t, os.WriteFile(dsnFile, []byte(testutil.PostgresDSN(t)), 0o600))
	tokenFile := filepath.Join(s.dir, "bridge-token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(bridgeToken), 0o600))
	config := s.render(t, "loop-sentinel.yml", map[string]string{
		"Tenant": tenant, "APIKey": apiKey, "AdminToken": adminToken,
		"WebhookURL": s.customer.server.URL + "/hook", "WebhookSecret": loopWebhookSecret,
		"BridgeTokenFile": tokenFile, "WatchdogTimeout": "0s", "DSNFile": dsnFile,
	})
	s.check(t, sentinelBin, "--config.check", "--config.file="+config)

	// Three replicas behind the proxy.
	const replicas = 3
	var (
		addrs    []string
		backends []string
		procs    []*process
	)
	for i := 1; i <= replicas; i++ {
		addr := testutil.FreeAddr(t)
		addrs, backends = append(addrs, addr), append(backends, "http://"+addr)
		p := startProcess(t, s.dir, fmt.Sprintf("sentinel-r%d", i), sentinelBin,
			"--config.file="+config,
			"--storage.path="+s.mkdir(t, fmt.Sprintf("sentinel-r%d-data", i)),
			"--storage.replica-name="+fmt.Sprintf("r%d", i),
			"--web.listen-address="+addr,
			"--storage.snapshot-interval=1s",
		)
		procs = append(procs, p)
	}
	for i, p := range procs {
		s.waitReady(t, p, backends[i]+"/-/ready")
	}
	proxyAddr := testutil.FreeAddr(t)
	proxy := &http.Server{Addr: proxyAddr, Handler: &roundRobin{backends: backends, client: &http.Client{Timeout: 15 * time.Second}}}
	go func() { _ = proxy.ListenAndServe() }()
	t.Cleanup(func() { _ = proxy.Close() })
	s.sentinelAddr, s.sentinelURL = proxyAddr, "http://"+proxyAddr
	waitFor(t, 10*time.Second, "the proxy to answer", func() bool {
		resp, err := s.client.Get(s.sentinelURL + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	// Two Alertmanagers, clustered over loopback, both notifying the proxy.
	amConfig := loopAlertmanagerConfig(t, s.dir, "alertmanager.yml",
		[]string{s.sentinelURL + "/api/v1/alertmanager"}, tokenFile, s.customer.server.URL+"/alertmanager")
	s.check(t, lookTool(t, "amtool"), "check-config", amConfig)
	amAddrs := []string{testutil.FreeAddr(t), testutil.FreeAddr(t)}
	peers := []string{testutil.FreeAddr(t), testutil.FreeAddr(t)}
	var ams []*process
	for i := range amAddrs {
		ams = append(ams, startProcess(t, s.dir, fmt.Sprintf("alertmanager-%d", i+1), s.amBin,
			"--config.file="+amConfig,
			"--storage.path="+s.mkdir(t, fmt.Sprintf("alertmanager-%d-data", i+1)),
			"--web.listen-address="+amAddrs[i],
			"--cluster.listen-address="+peers[i],
			"--cluster.advertise-address="+peers[i],
			"--cluster.peer="+peers[1-i],
			// Both are up: the second would wait this long for the first's
			// notification log before sending its own copy.
			"--cluster.peer-timeout=2s",
		))
	}
	for i, p := range ams {
		s.waitReady(t, p, "http://"+amAddrs[i]+"/-/ready")
	}
	for _, a := range amAddrs {
		waitFor(t, 30*time.Second, "Alertmanager "+a+" to see its peer", func() bool {
			var st struct {
				Cluster struct {
					Status string `json:"status"`
					Peers  []any  `json:"peers"`
				} `json:"cluster"`
			}
			resp, err := s.client.Get("http://" + a + "/api/v2/status")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			return json.NewDecoder(resp.Body).Decode(&st) == nil && st.Cluster.Status == "ready" && len(st.Cluster.Peers) == 2
		})
	}

	// Two Prometheus servers, each scraping every replica, each notifying
	// both Alertmanagers (Alertmanager's own deduplication is under test).
	var proms []string
	for i := 1; i <= 2; i++ {
		promAddr := testutil.FreeAddr(t)
		cfg := filepath.Join(s.dir, fmt.Sprintf("prometheus-%d.yml", i))
		require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s, external_labels: {prometheus: p%d}}
rule_files: [%q]
alerting:
  alertmanagers:
    - static_configs: [{targets: [%q, %q]}]
scrape_configs:
  - job_name: sentinel
    static_configs: [{targets: [%q, %q, %q]}]
`, i, rulesFile, amAddrs[0], amAddrs[1], addrs[0], addrs[1], addrs[2])), 0o600))
		p := startProcess(t, s.dir, fmt.Sprintf("prometheus-%d", i), promBin,
			"--config.file="+cfg,
			"--storage.tsdb.path="+s.mkdir(t, fmt.Sprintf("prometheus-%d-data", i)),
			"--web.listen-address="+promAddr,
			"--rules.alert.resend-delay=1s",
		)
		s.waitReady(t, p, "http://"+promAddr+"/-/ready")
		proms = append(proms, "http://"+promAddr)
	}
	for _, u := range proms {
		s.promURL = u
		waitFor(t, 30*time.Second, "Prometheus "+u+" to scrape the three replicas", func() bool {
			r := s.query(t, `sum(up{job="sentinel"})`)
			return len(r) == 1 && r[0].Value == replicas
		})
	}
	t.Logf("replicated loop up in %s", time.Since(start).Round(time.Millisecond))

	dir := s.mkdir(t, "agents")
	steady := startAgent(t, dir, s.sentinelURL, "steady", workScript)
	hangs := startAgent(t, dir, s.sentinelURL, "hangs", workScript)
	naps := startAgent(t, dir, s.sentinelURL, "naps", workScript)
	s.waitRegistered(t, steady, hangs, naps)
	time.Sleep(2 * time.Second)

	// hangs goes first; naps follows once hangs is SILENT, so that naps is
	// SILENT, still frozen, when the replica dies.
	hangs.freeze(t)
	s.customer.wait(t, 20*time.Second, "SILENT of hangs", stateChange("hangs", "SILENT"))
	naps.freeze(t)
	s.customer.wait(t, 20*time.Second, "SILENT of naps", stateChange("naps", "SILENT"))

	// A replica dies mid-run: the moment AgentZombie fires, with the
	// notification, its revocation and their deliveries on their way
	// through any of the three. (Not earlier: the rules hold a replica's
	// last counts for 5 minutes after its scrapes fail, so no agent alert
	// changes meanwhile; transitions that come from heartbeats still do.)
	// Either Prometheus may be the one whose alert revokes hangs; the other
	// then sees it revoked, and never firing, at its next evaluation.
	waitFor(t, 30*time.Second, "AgentZombie of hangs to fire", func() bool {
		for _, u := range proms {
			s.promURL = u
			if s.fired(t, "AgentZombie", "hangs") {
				return true
			}
		}
		return false
	})
	require.NoError(t, procs[1].cmd.Process.Signal(syscall.SIGKILL))
	<-procs[1].done
	killed := time.Now()
	t.Log("replica r2 killed")
	naps.thaw(t) // its recovery goes through the two replicas left

	s.customer.wait(t, 20*time.Second, "ACTIVE of naps", stateChange("naps", "ACTIVE"))
	// Up to a claim's lease when the killed replica held the delivery.
	s.customer.wait(t, 60*time.Second, "ZOMBIE of hangs", stateChange("hangs", "ZOMBIE"))
	rev := s.customer.wait(t, 60*time.Second, "agent.revoked of hangs", revoked("hangs"))
	t.Logf("agent.revoked of hangs delivered %+v from r2's death (negative: before it)", rev.received.Sub(killed).Round(time.Millisecond))
	hangs.thaw(t)
	code, _ := hangs.exit(t, 15*time.Second)
	require.Equal(t, 3, code, "beacon exits 3 when revoked through any replica\n%s", hangs.p.tail(20))

	// Late duplicates (a second Alertmanager, another replica) would come
	// within a few seconds.
	time.Sleep(3 * time.Second)
	for id, want := range map[string][]string{
		"steady": nil,
		"hangs":  {"hangs ACTIVE→SILENT", "hangs SILENT→ZOMBIE", "hangs revoked by alert:AgentZombie"},
		"naps":   {"naps ACTIVE→SILENT", "naps SILENT→ACTIVE"},
	} {
		got := s.customer.events(ofAgent(id))
		var names []string
		for i, e := range got {
			names = append(names, e.name())
			if i > 0 {
				require.Greater(t, e.Sequence, got[i-1].Sequence, "%s: sequence must increase: %v", id, got)
			}
		}
		require.Equal(t, want, names, "the events of %s", id)
	}
	received := func() map[string]string {
		got := map[string]string{}
		for _, e := range s.customer.events(func(event) bool { return true }) {
			got[e.EventID] = "delivered"
		}
		return got
	}
	// A delivery the killed replica made but had not yet recorded stays
	// pending until its claim's lease (the webhook timeout plus a margin)
	// runs out and a replica left delivers it again: at least once.
	eventually(60*time.Second, func() bool { return maps.Equal(received(), s.deliveries(t)) })
	require.Equal(t, received(), s.deliveries(t), "the replicas' deliveries and what the customer received")
	require.False(t, steady.p.exited(), "the steady agent's beacon exited\n%s", steady.p.tail(20))
	require.Equal(t, "ACTIVE", s.installationState(t, "steady"))
	t.Logf("%d deliveries, %d repeated; replicated loop test took %s",
		len(s.customer.events(func(event) bool { return true })), s.customer.redeliveries(), time.Since(start).Round(time.Millisecond))
}

// Command sizing measures what a fleet costs sentinel and the time-series
// database that scrapes it, for docs/sizing.md. For each fleet size it
// builds and starts the real sentinel on loopback, registers the agents
// with heartbeats over HTTP (Kubernetes platform strings, like a real
// fleet), measures /metrics (bytes raw and gzipped, sentinel's CPU time and
// wall time per scrape, from /proc, half the fleet beating again before each
// scrape), then lets Prometheus and single-node
// VictoriaMetrics scrape it side by side and reads their resident memory
// and scrape durations.
//
//	go run ./scripts/sizing -agents 10000,100000
//
// It needs prometheus and victoria-metrics on PATH (make test-deps) and
// Linux (/proc). Everything runs in a temporary directory and is stopped
// at the end.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	apiKey       = "sizing-api-key"
	metricsToken = "sizing-metrics-token"
)

func main() {
	agents := flag.String("agents", "10000,100000", "comma-separated fleet sizes")
	scrapes := flag.Int("scrapes", 5, "scrapes of /metrics per encoding for sentinel's own figures")
	interval := flag.Duration("scrape-interval", 15*time.Second, "scrape interval of Prometheus and VictoriaMetrics")
	rounds := flag.Int("rounds", 4, "scrapes Prometheus and VictoriaMetrics make before they are measured")
	vmMaxScrape := flag.String("vm-max-scrape-size", "16MB", "VictoriaMetrics -promscrape.maxScrapeSize (16MB is its default)")
	flag.Parse()
	if err := run(*agents, *scrapes, *rounds, *interval, *vmMaxScrape); err != nil {
		fmt.Fprintln(os.Stderr, "sizing:", err)
		os.Exit(1)
	}
}

// result is one row of the table.
type result struct {
	agents               int
	rawBytes, gzipBytes  int
	rawCPU, gzipCPU      time.Duration // sentinel CPU per scrape
	rawWall, gzipWall    time.Duration
	sentinelRSS          int64
	promRSS, vmRSS       int64
	promScrape, vmScrape time.Duration // average scrape_duration_seconds
	promUp, vmUp         float64
	registerRate         float64       // heartbeats per second while registering
	promError, vmError   string        // the last scrape error, if any
	promCPU, vmCPU       time.Duration // CPU per scrape, all work included
	load                 string        // /proc/loadavg while measuring
}

func run(agentList string, scrapes, rounds int, interval time.Duration, vmMaxScrape string) error {
	dir, err := os.MkdirTemp("", "sentinel-sizing-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "sentinel")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/sentinel").CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/sentinel (run from the repository root): %v\n%s", err, out)
	}
	var rows []result
	for _, s := range strings.Split(agentList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("bad fleet size %q", s)
		}
		r, err := measure(dir, bin, n, scrapes, rounds, interval, vmMaxScrape)
		if err != nil {
			return fmt.Errorf("%d agents: %w", n, err)
		}
		rows = append(rows, r)
		fmt.Fprintf(os.Stderr, "%d agents: %+v\n", n, r)
	}
	fmt.Printf("| agents | /metrics raw | gzip | sentinel CPU per scrape raw / gzip | sentinel wall raw / gzip | sentinel RSS | Prometheus RSS | Prometheus scrape duration / CPU per scrape | VictoriaMetrics RSS | VictoriaMetrics scrape duration / CPU per scrape | load |\n")
	fmt.Printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Printf("| %d | %.1f MB | %.2f MB | %s / %s | %s / %s | %s | %s | %s / %s%s | %s | %s / %s%s | %s |\n",
			r.agents, float64(r.rawBytes)/1e6, float64(r.gzipBytes)/1e6,
			ms(r.rawCPU), ms(r.gzipCPU), ms(r.rawWall), ms(r.gzipWall),
			mb(r.sentinelRSS), mb(r.promRSS), ms(r.promScrape), ms(r.promCPU), down(r.promUp),
			mb(r.vmRSS), ms(r.vmScrape), ms(r.vmCPU), down(r.vmUp), r.load)
	}
	fmt.Println()
	for _, r := range rows {
		fmt.Printf("- %d agents: registered at %.0f heartbeats/s", r.agents, r.registerRate)
		if r.promError != "" {
			fmt.Printf("; Prometheus' last scrape error: %s", r.promError)
		}
		if r.vmError != "" {
			fmt.Printf("; VictoriaMetrics' last scrape error: %s", r.vmError)
		}
		fmt.Println()
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1e3) }
func mb(b int64) string         { return fmt.Sprintf("%.0f MB", float64(b)/1e6) }

func down(up float64) string {
	if up == 1 {
		return ""
	}
	return " (up=0: scrape refused)"
}

func measure(dir, bin string, n, scrapes, rounds int, interval time.Duration, vmMaxScrape string) (result, error) {
	r := result{agents: n}
	run := filepath.Join(dir, strconv.Itoa(n))
	if err := os.MkdirAll(run, 0o755); err != nil {
		return r, err
	}
	config := filepath.Join(run, "sentinel.yml")
	if err := os.WriteFile(config, fmt.Appendf(nil, `heartbeat:
  max_agents: %d
tenants:
  - id: acme
    api_keys: [%s]
    max_agents: %d
metrics:
  bearer_token: %s
`, 2*n, apiKey, 2*n, metricsToken), 0o600); err != nil {
		return r, err
	}
	addr, err := freeAddr()
	if err != nil {
		return r, err
	}
	sentinel, err := start(run, "sentinel", bin, "--config.file="+config, "--storage.path="+filepath.Join(run, "data"),
		"--web.listen-address="+addr, "--storage.snapshot-interval=1h")
	if err != nil {
		return r, err
	}
	defer sentinel.stop()
	base := "http://" + addr
	if err := waitHTTP(base+"/-/ready", 30*time.Second); err != nil {
		return r, err
	}

	t0 := time.Now()
	if err := beat(base, n, 0); err != nil {
		return r, err
	}
	r.registerRate = float64(n) / time.Since(t0).Seconds()

	// Before each scrape half the fleet beats again, as a fleet beating
	// every 30 s does between scrapes 15 s apart: a scrape of a fleet that
	// never changed would flatter gzip, which compresses again only what
	// changed since the last scrape.
	round := 0
	for _, gz := range []bool{false, true} {
		var size int
		var cpu, wall time.Duration
		for range scrapes {
			round++
			if err := beat(base, n, round); err != nil {
				return r, err
			}
			c0, err := cpuTime(sentinel.cmd.Process.Pid)
			if err != nil {
				return r, err
			}
			t0 := time.Now()
			size, err = scrape(base+"/metrics", gz)
			if err != nil {
				return r, err
			}
			wall += time.Since(t0)
			c1, err := cpuTime(sentinel.cmd.Process.Pid)
			if err != nil {
				return r, err
			}
			cpu += c1 - c0
		}
		if gz {
			r.gzipBytes, r.gzipCPU, r.gzipWall = size, cpu/time.Duration(scrapes), wall/time.Duration(scrapes)
		} else {
			r.rawBytes, r.rawCPU, r.rawWall = size, cpu/time.Duration(scrapes), wall/time.Duration(scrapes)
		}
	}

	// Prometheus and VictoriaMetrics scrape sentinel side by side.
	scrapeConfig := filepath.Join(run, "scrape.yml")
	if err := os.WriteFile(scrapeConfig, fmt.Appendf(nil, `global:
  scrape_interval: %s
  scrape_timeout: %s
scrape_configs:
  - job_name: sentinel
    authorization:
      credentials: %s
    static_configs:
      - targets: ['%s']
`, interval, min(interval, 10*time.Second), metricsToken, addr), 0o600); err != nil {
		return r, err
	}
	promAddr, err := freeAddr()
	if err != nil {
		return r, err
	}
	vmAddr, err := freeAddr()
	if err != nil {
		return r, err
	}
	prom, err := start(run, "prometheus", "prometheus", "--config.file="+scrapeConfig,
		"--storage.tsdb.path="+filepath.Join(run, "prometheus"), "--web.listen-address="+promAddr)
	if err != nil {
		return r, err
	}
	defer prom.stop()
	vm, err := start(run, "victoria-metrics", "victoria-metrics", "-promscrape.config="+scrapeConfig,
		"-storageDataPath="+filepath.Join(run, "vm"), "-httpListenAddr="+vmAddr,
		"-promscrape.maxScrapeSize="+vmMaxScrape, "-search.latencyOffset=1s")
	if err != nil {
		return r, err
	}
	defer vm.stop()
	promURL, vmURL := "http://"+promAddr, "http://"+vmAddr
	if err := waitHTTP(promURL+"/-/ready", 60*time.Second); err != nil {
		return r, err
	}
	if err := waitHTTP(vmURL+"/health", 60*time.Second); err != nil {
		return r, err
	}
	// Both scrape once per interval (Prometheus hands its targets to the
	// scrape manager after ~5 s, and a first scrape of a large fleet, which
	// creates every series, takes longest).
	for _, base := range []string{promURL, vmURL} {
		if err := waitScrapes(base, 1, 10*time.Minute); err != nil {
			return r, err
		}
	}
	// From the first scrape on, the CPU each spends per scrape: the one
	// figure a busy machine does not inflate.
	promCPU0, err1 := cpuTime(prom.cmd.Process.Pid)
	vmCPU0, err2 := cpuTime(vm.cmd.Process.Pid)
	if err := errors.Join(err1, err2); err != nil {
		return r, err
	}
	time.Sleep(time.Duration(rounds) * interval)
	promCPU1, err1 := cpuTime(prom.cmd.Process.Pid)
	vmCPU1, err2 := cpuTime(vm.cmd.Process.Pid)
	if err := errors.Join(err1, err2); err != nil {
		return r, err
	}
	r.promCPU, r.vmCPU = (promCPU1-promCPU0)/time.Duration(rounds), (vmCPU1-vmCPU0)/time.Duration(rounds)
	r.load = loadAverage()
	window := fmt.Sprintf("[%ds]", int((time.Duration(rounds) * interval).Seconds()))
	r.promError, r.vmError = lastError(promURL), lastError(vmURL)
	if r.promScrape, r.promUp, err = scrapeStats(promURL, window); err != nil {
		return r, fmt.Errorf("prometheus: %w", err)
	}
	if r.vmScrape, r.vmUp, err = scrapeStats(vmURL, window); err != nil {
		return r, fmt.Errorf("victoria-metrics: %w", err)
	}
	if r.promRSS, err = rss(prom.cmd.Process.Pid); err != nil {
		return r, err
	}
	if r.vmRSS, err = rss(vm.cmd.Process.Pid); err != nil {
		return r, err
	}
	if r.sentinelRSS, err = rss(sentinel.cmd.Process.Pid); err != nil {
		return r, err
	}
	return r, nil
}

// beat sends heartbeats over 16 connections: in round 0 one for each of the
// n agents (their registration), in round r one for every other agent (odd
// or even by round), uptime and counters grown by r as a running agent's.
func beat(base string, n, round int) error {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if round > 0 {
					i = 2*i + round%2
				}
				if i >= n {
					return
				}
				id := fmt.Sprintf("agent-%07d", i)
				body := fmt.Sprintf(`{"status":"healthy","heartbeat_interval_seconds":60,"version":"1.4.2","uptime_seconds":%d,`+
					`"platform":{"type":"kubernetes","pod_name":"%s-7f8a9b6c5d-x2k4q","namespace":"production","node":"ip-10-0-%d-%d.eu-west-1.compute.internal",`+
					`"image":"registry.example.com/agents/worker:1.4.2","container_id":"containerd://%064x","hostname":"%s-7f8a9b6c5d-x2k4q","region":"eu-west-1"},`+
					`"metrics":{"requests_handled":%d,"errors":%d,"avg_latency_ms":145}}`, i+60*round, id, i%256, i/256%256, i, id, i*7+round, i%13)
				req, err := http.NewRequest(http.MethodPost, base+"/api/v1/installations/"+id+"/heartbeat", strings.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				req.Header.Set("Authorization", "Bearer "+apiKey)
				res, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				raw, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("heartbeat of %s: %d %s", id, res.StatusCode, raw)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs // nil when none
}

// scrape fetches /metrics as a scraper does and returns the bytes on the wire.
func scrape(u string, gz bool) (int, error) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+metricsToken)
	if gz {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	// A Transport of its own, so that Go does not decompress transparently.
	res, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	n, err := io.Copy(io.Discard, res.Body)
	if err == nil && res.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", u, res.Status)
	}
	if gz && res.Header.Get("Content-Encoding") != "gzip" {
		err = errors.Join(err, errors.New("no gzip answer"))
	}
	return int(n), err
}

// waitScrapes waits until base has scraped the sentinel job rounds times.
func waitScrapes(base string, rounds int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n, err := query(base, `count_over_time(up{job="sentinel"}[1h])`)
		if err == nil && n >= float64(rounds) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: fewer than %d scrapes after %s (%v)", base, rounds, timeout, err)
		}
		time.Sleep(time.Second)
	}
}

// lastError is the last scrape error of the sentinel target, from the
// Prometheus-compatible /api/v1/targets.
func lastError(base string) string {
	res, err := http.Get(base + "/api/v1/targets")
	if err != nil {
		return err.Error()
	}
	defer res.Body.Close()
	var body struct {
		Data struct {
			ActiveTargets []struct {
				LastError string `json:"lastError"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		return err.Error()
	}
	for _, t := range body.Data.ActiveTargets {
		if t.LastError != "" {
			return t.LastError
		}
	}
	return ""
}

// scrapeStats reads the average scrape duration of the sentinel job over
// window and its last up from a Prometheus-compatible query API.
func scrapeStats(base, window string) (time.Duration, float64, error) {
	d, err := query(base, `avg_over_time(scrape_duration_seconds{job="sentinel"}`+window+`)`)
	if err != nil {
		return 0, 0, err
	}
	up, err := query(base, `up{job="sentinel"}`)
	return time.Duration(d * float64(time.Second)), up, err
}

func query(base, q string) (float64, error) {
	res, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	var body struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		return 0, fmt.Errorf("%s: %w", q, err)
	}
	if len(body.Data.Result) != 1 {
		return 0, fmt.Errorf("%s: %d results", q, len(body.Data.Result))
	}
	s, _ := body.Data.Result[0].Value[1].(string)
	return strconv.ParseFloat(s, 64)
}

// cpuTime is a process's user plus system CPU time (/proc/<pid>/stat,
// fields 14 and 15, in clock ticks of 10 ms).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: count from its ')'.
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// loadAverage is the 1-minute load average, to tell a busy machine's
// figures from a quiet one's.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

// rss is a process's resident set size (/proc/<pid>/status VmRSS).
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1000, err
		}
	}
	return 0, errors.New("no VmRSS")
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// start runs bin with its output in dir/<name>.log.
func start(dir, name, bin string, args ...string) (*process, error) {
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); log.Close(); close(p.done) }()
	return p, nil
}

func (p *process) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func waitHTTP(u string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s", u, timeout)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Command bench runs sentinel's side-by-side benchmark (make bench, make
// bench-quick) and writes BENCHMARKS.md: every figure next to a reference
// measured in the same run on the same machine, as a ratio.
//
// The servers under test run pinned to one core (--server-cpu), the load
// generator, the scrapers and Prometheus to another (--gen-cpu), with
// taskset. The driver itself should run on the generator's core
// (the Makefile does so).
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
)

const (
	apiKey      = "bench-tenant-api-key-0123456789"
	adminKey    = "bench-tenant-admin-token-0123456789"
	bridgeToken = "bench-bridge-token-0123456789"
	tenant      = "bench"

	// fleetInterval is the simulated agents' heartbeat interval.
	fleetInterval = time.Minute
)

// trimFlags are the collector flags of the trimmed sentinel: every
// per-agent family the alerting rules do not read is switched off.
var trimFlags = []string{
	"--no-collector.agent-info", "--no-collector.agent-uptime", "--no-collector.agent-requests",
	"--no-collector.agent-errors", "--no-collector.agent-latency",
}

type env struct {
	quick      bool
	bin        string
	dir        string
	serverCPU  string
	genCPU     string
	taskset    bool
	cfgFile    string
	nextPort   int
	out        *report
	reportFile string // where the report goes
	started    time.Time
	loadBefore string
	// hook receives the tenant's outgoing webhooks (the bridge scenario).
	hook *hookReceiver
	// large and huge are the fleet sizes of the 100k and 1M scenarios
	// (smaller ones try the full run out quickly).
	large, huge int
}

func main() { os.Exit(run()) }

func run() int {
	a := kingpin.New("bench", "Run sentinel's side-by-side benchmark and write BENCHMARKS.md.")
	e := &env{nextPort: 19500, started: time.Now()}
	outFile := a.Flag("out", "Markdown report to write.").Default("BENCHMARKS.md").String()
	a.Flag("quick", "The one-minute subset.").BoolVar(&e.quick)
	a.Flag("bin", "Directory holding sentinel, sentinel-loadgen and refserver.").Default("bin").StringVar(&e.bin)
	a.Flag("server-cpu", "CPU the servers under test are pinned to.").Default("0").StringVar(&e.serverCPU)
	a.Flag("gen-cpu", "CPU the load generator, scrapers and Prometheus are pinned to.").Default("1").StringVar(&e.genCPU)
	a.Flag("large", "Fleet size of the scrape, Prometheus and kill-switch scenarios.").Default("100000").IntVar(&e.large)
	a.Flag("huge", "Fleet size of the memory and GC scenario.").Default("1000000").IntVar(&e.huge)
	if _, err := a.Parse(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 2
	}
	e.reportFile = *outFile
	// runtime.NumCPU counts only the CPUs this process may use, and the
	// Makefile pins the driver to one: count the machine's.
	if _, err := exec.LookPath("taskset"); err == nil && onlineCPUs() >= 2 {
		e.taskset = true
	}
	dir, err := os.MkdirTemp("", "sentinel-bench-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	e.dir = dir
	e.loadBefore = loadAvg()
	e.out = &report{}
	// Interrupted: stop every server started, then exit.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		live.Range(func(k, _ any) bool {
			k.(*proc).stop()
			return true
		})
		os.RemoveAll(dir)
		os.Exit(130)
	}()
	if err := e.writeConfig(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	if err := e.all(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		e.out.note("The run stopped early: " + err.Error())
	}
	if err := os.WriteFile(*outFile, e.markdown(), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s in %s\n", *outFile, time.Since(e.started).Round(time.Second))
	return 0
}

func onlineCPUs() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.NumCPU()
	}
	return strings.Count(string(b), "\nprocessor\t") + btoi(strings.HasPrefix(string(b), "processor\t"))
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func (e *env) writeConfig() error {
	e.cfgFile = filepath.Join(e.dir, "sentinel.yml")
	hook, err := startHookReceiver()
	if err != nil {
		return err
	}
	e.hook = hook
	cfg := `heartbeat:
  default_interval: 60s
  min_interval: 1s
  max_interval: 1h
  max_agents: 1100000
tenants:
  - id: ` + tenant + `
    api_keys: [` + apiKey + `]
    admin_tokens: [` + adminKey + `]
    webhook:
      url: ` + hook.url + `
      secrets: [whsec_YmVuY2gtd2ViaG9vay1zZWNyZXQtMDEyMzQ1Njc4OQ==]
bridge:
  bearer_token: ` + bridgeToken + `
`
	return os.WriteFile(e.cfgFile, []byte(cfg), 0o600)
}

// all runs every scenario in order; a failed scenario is noted and the
// next one runs.
func (e *env) all() error {
	bare, err := e.start("bare", e.serverCPU, nil, filepath.Join(e.bin, "refserver"), "--web.listen-address", e.addr(), "bare")
	if err != nil {
		return err
	}
	defer bare.stop()

	small := 10000
	if e.quick {
		small = 5000
	}
	ing10, err := e.ingest(bare, small)
	if err != nil {
		return fmt.Errorf("ingest at %d agents: %w", small, err)
	}
	emb, err := e.bridge(ing10)
	if err != nil {
		e.out.note(fmt.Sprintf("bridge scenario failed: %v", err))
	}
	// The small sentinel's figures stay for the Pushgateway comparison,
	// its process gives the machine back to the large fleets.
	if emb != nil {
		if err := e.postgres(ing10, emb); err != nil {
			e.out.note(fmt.Sprintf("PostgreSQL scenario failed: %v", err))
		}
	}
	ing10.sentinel.stop()
	if !e.quick {
		if err := e.largeFleet(bare, ing10); err != nil {
			e.out.note(fmt.Sprintf("100k scenarios failed: %v", err))
		}
		if err := e.memory1M(bare, ing10); err != nil {
			e.out.note(fmt.Sprintf("1M memory scenario failed: %v", err))
		}
	}
	if err := e.pushgateway(ing10); err != nil {
		e.out.note(fmt.Sprintf("Pushgateway scenario failed: %v", err))
	}
	return nil
}

func (e *env) addr() string {
	for {
		e.nextPort++
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", e.nextPort))
		if err == nil {
			l.Close()
			return l.Addr().String()
		}
	}
}

// live holds the started servers that have not exited.
var live sync.Map // *proc → struct{}

// proc is a started server.
type proc struct {
	name string
	cmd  *exec.Cmd
	url  string
	done chan struct{}
	// gcCPU sums the GC CPU milliseconds of the gctrace lines seen
	// (assist + background + the two stop-the-world phases; not idle
	// marking, which only uses CPU nothing else wanted).
	gcCPU    atomic.Int64 // microseconds
	gcCycles atomic.Int64
	mu       sync.Mutex
	tail     []string // last stderr lines, for errors
	exited   error
}

func (e *env) start(name, cpu string, extraEnv []string, path string, args ...string) (*proc, error) {
	listen := ""
	for i, a := range args {
		if a == "--web.listen-address" && i+1 < len(args) {
			listen = args[i+1]
		}
	}
	argv := append([]string{path}, args...)
	if e.taskset {
		argv = append([]string{"taskset", "-c", cpu}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), extraEnv...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, url: "http://" + listen, done: make(chan struct{})}
	live.Store(p, struct{}{})
	go p.watch(stderr)
	if err := p.waitReady(60 * time.Second); err != nil {
		p.stop()
		return nil, err
	}
	logf("%s started (pid %d) on %s", name, cmd.Process.Pid, listen)
	return p, nil
}

func (p *proc) watch(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if us, ok := parseGCTrace(line); ok {
			p.gcCPU.Add(us)
			p.gcCycles.Add(1)
			continue
		}
		p.mu.Lock()
		p.tail = append(p.tail, line)
		if len(p.tail) > 20 {
			p.tail = p.tail[1:]
		}
		p.mu.Unlock()
	}
	p.exited = p.cmd.Wait()
	live.Delete(p)
	close(p.done)
}

// parseGCTrace returns the GC CPU of a GODEBUG=gctrace=1 line in
// microseconds: "gc 7 @1.2s 3%: a+b+c ms clock, A+B/C/D+E ms cpu, …" → A+B+C+E.
func parseGCTrace(line string) (int64, bool) {
	if !strings.HasPrefix(line, "gc ") {
		return 0, false
	}
	_, rest, ok := strings.Cut(line, "clock, ")
	if !ok {
		return 0, false
	}
	cpu, _, ok := strings.Cut(rest, " ms cpu")
	if !ok {
		return 0, false
	}
	parts := strings.Split(cpu, "+")
	if len(parts) != 3 {
		return 0, false
	}
	mid := strings.Split(parts[1], "/")
	if len(mid) != 3 {
		return 0, false
	}
	var total float64
	for _, s := range []string{parts[0], mid[0], mid[1], parts[2]} {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, false
		}
		total += v
	}
	return int64(total * 1000), true
}

func (p *proc) errTail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

func (p *proc) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %v\n%s", p.name, p.exited, p.errTail())
		default:
		}
		resp, err := http.Get(p.url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %s\n%s", p.name, timeout, p.errTail())
}

// stop sends SIGTERM and waits (sentinel writes its final snapshot).
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// cpuSeconds is the process's user+system CPU time from /proc.
func (p *proc) cpuSeconds() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid()))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}

// rss is the process's resident set size from /proc, in bytes.
func (p *proc) rss() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid()))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// summary is the part of sentinel-loadgen's JSON summary the driver reads.
type summary struct {
	Register *phase `json:"register"`
	Load     *phase `json:"load"`
}

type phase struct {
	Seconds    float64        `json:"seconds"`
	Requests   float64        `json:"requests"`
	OK         float64        `json:"ok"`
	Errors     float64        `json:"errors"`
	Status     map[string]int `json:"status"`
	Throughput float64        `json:"throughput_per_second"`
	Latency    struct {
		P50  float64 `json:"p50"`
		P99  float64 `json:"p99"`
		P999 float64 `json:"p99_9"`
	} `json:"latency_seconds"`
	MaxBehind float64 `json:"max_behind_schedule_seconds"`
}

// loadResult is a loadgen run against one server, with the server's CPU
// time over the measured phase.
type loadResult struct {
	sum        summary
	serverCPU  float64 // seconds over the load phase
	gcCPU      float64 // seconds over the load phase (gctrace servers only)
	gcCycles   int64
	cpuPerBeat float64 // seconds
}

// loadgen runs sentinel-loadgen on the generator's core against target
// and samples target's CPU time when the load phase starts and ends.
func (e *env) loadgen(target *proc, args ...string) (*loadResult, error) {
	return e.loadgenUntil(context.Background(), nil, target, args...)
}

// loadgenUntil is loadgen for a run that ctx may end early: the generator is
// then interrupted, and reports what it did until then. started, when not
// nil, is closed once the measured phase has begun.
func (e *env) loadgenUntil(ctx context.Context, started chan<- struct{}, target *proc, args ...string) (*loadResult, error) {
	argv := append([]string{filepath.Join(e.bin, "sentinel-loadgen"), "--url", target.url, "--token", apiKey,
		"--json=-", "--quiet"}, args...)
	if e.taskset {
		argv = append([]string{"taskset", "-c", e.genCPU}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// taskset execs the generator, so the signal reaches it; it stops and
	// prints its summary on an interrupt.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var (
		cpu0, gc0 float64
		cycles0   int64
		tail      []string
	)
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if sc.Text() == "phase load started" {
			cpu0, gc0, cycles0 = target.cpuSeconds(), float64(target.gcCPU.Load())/1e6, target.gcCycles.Load()
			if started != nil {
				close(started)
				started = nil
			}
			continue
		}
		tail = append(tail, sc.Text())
	}
	werr := cmd.Wait()
	res := &loadResult{
		serverCPU: target.cpuSeconds() - cpu0,
		gcCPU:     float64(target.gcCPU.Load())/1e6 - gc0,
		gcCycles:  target.gcCycles.Load() - cycles0,
	}
	if err := json.Unmarshal(stdout.Bytes(), &res.sum); err != nil || res.sum.Load == nil {
		return nil, fmt.Errorf("sentinel-loadgen %s: %v %v\n%s", strings.Join(args, " "), werr, err, strings.Join(tail, "\n"))
	}
	if res.sum.Load.Requests > 0 {
		res.cpuPerBeat = res.serverCPU / res.sum.Load.Requests
	}
	if l := res.sum.Load; l.Errors > 0 {
		logf("  %s: %.0f of %.0f requests failed: %v", target.name, l.Errors, l.Requests, l.Status)
	}
	return res, nil
}

func (e *env) dur(full, quick time.Duration) string {
	if e.quick {
		return quick.String()
	}
	return full.String()
}

// ingestResult is the ingest comparison at one fleet size.
type ingestResult struct {
	agents                     int
	bareClosed, sentClosed     *loadResult
	rate                       float64 // open-loop rate: half the bare saturation
	bareOpen, sentOpen         *loadResult
	sentinel                   *proc // left running for the following scenarios
	scrapeSeconds, scrapeBytes float64
	scrapeFirstSeconds         float64 // the first, which allocates the buffers
	scrapeUnchangedSeconds     float64 // nothing changed since the scrape before
	rssEmpty, rssLoaded        int64
	connsClosed, connsOpen     string
}

// ingest measures sentinel against the bare handler at n agents. The
// sentinel it started is returned running.
func (e *env) ingest(bare *proc, n int) (*ingestResult, error) {
	r := &ingestResult{agents: n, connsClosed: "32", connsOpen: "64"}
	logf("ingest at %d agents", n)
	sent, err := e.startSentinel(fmt.Sprintf("sentinel-%d", n), filepath.Join(e.dir, fmt.Sprintf("data-%d", n)), nil)
	if err != nil {
		return nil, err
	}
	r.sentinel = sent
	ok := false
	defer func() {
		if !ok {
			sent.stop()
		}
	}()
	r.rssEmpty = sent.rss()
	d := e.dur(10*time.Second, 5*time.Second)
	common := []string{"--agents", strconv.Itoa(n), "--protocol", "mixed", "--interval", fleetInterval.String()}
	// Interleaved, so that both servers see the same machine state.
	if r.bareClosed, err = e.loadgen(bare, append(common, "--mode", "closed", "--connections", r.connsClosed, "--duration", d)...); err != nil {
		return nil, err
	}
	if r.sentClosed, err = e.loadgen(sent, append(common, "--mode", "closed", "--connections", r.connsClosed, "--duration", d)...); err != nil {
		return nil, err
	}
	r.rate = r.bareClosed.sum.Load.Throughput / 2
	rate := strconv.FormatFloat(r.rate, 'f', 0, 64)
	// The open-loop runs reuse the agents registered above (registering
	// 100k again would take a minute); their Beacon agents beat with the
	// tenant key.
	if r.bareOpen, err = e.loadgen(bare, append(common, "--no-register", "--mode", "open", "--rate", rate, "--connections", r.connsOpen, "--duration", d)...); err != nil {
		return nil, err
	}
	if r.sentOpen, err = e.loadgen(sent, append(common, "--no-register", "--mode", "open", "--rate", rate, "--connections", r.connsOpen, "--duration", d)...); err != nil {
		return nil, err
	}
	r.rssLoaded = sent.rss()
	// The first scrape also allocates the page's buffers. Then the fleet
	// beats for a second (tens of thousands of heartbeats), so that the next
	// scrape renders what a heartbeat changes in every chunk of the page, in
	// buffers already there: the steady state of a scraped fleet. The last
	// ones find nothing changed and keep the text of the one before.
	if r.scrapeFirstSeconds, _, err = scrapeMedian(sent.url+"/metrics", 1); err != nil {
		return nil, err
	}
	if _, err = e.loadgen(sent, append(common, "--no-register", "--mode", "closed", "--connections", r.connsClosed, "--duration", "1s")...); err != nil {
		return nil, err
	}
	if r.scrapeSeconds, r.scrapeBytes, err = scrapeMedian(sent.url+"/metrics", 1); err != nil {
		return nil, err
	}
	if r.scrapeUnchangedSeconds, _, err = scrapeMedian(sent.url+"/metrics", 3); err != nil {
		return nil, err
	}
	e.out.ingest(r)
	ok = true
	return r, nil
}

func (e *env) startSentinel(name, data string, extra []string, extraEnv ...string) (*proc, error) {
	return e.startSentinelWith(e.cfgFile, name, data, extra, extraEnv...)
}

// startSentinelWith starts sentinel with the configuration file cfg.
func (e *env) startSentinelWith(cfg, name, data string, extra []string, extraEnv ...string) (*proc, error) {
	args := append([]string{"--config.file", cfg, "--storage.path", data,
		"--web.listen-address", e.addr(), "--log.level", "warn"}, extra...)
	return e.start(name, e.serverCPU, extraEnv, filepath.Join(e.bin, "sentinel"), args...)
}

// scrapeMedian GETs url n times, identity encoding, and returns the median
// time to the last byte and the size.
func scrapeMedian(url string, n int) (float64, float64, error) {
	id, _, err := scrapeMedians(url, n, false)
	return id.seconds, id.bytes, err
}

// scrapeFigures is the median time to the last byte of some scrapes, and
// the size of the answer.
type scrapeFigures struct{ seconds, bytes float64 }

// scrapeMedians GETs url n times with identity encoding and, when withGzip,
// n times more asking for gzip as Prometheus does, alternating, and returns
// the medians of each. The gzip answer is read as it comes, not inflated.
func scrapeMedians(url string, n int, withGzip bool) (identity, gzipped scrapeFigures, err error) {
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: 2 * time.Minute}
	get := func(encoding string) (float64, float64, error) {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return 0, 0, err
		}
		req.Header.Set("Accept-Encoding", encoding)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, 0, err
		}
		b, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return 0, 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, 0, fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		if got := resp.Header.Get("Content-Encoding"); got != strings.TrimSuffix(encoding, "identity") {
			return 0, 0, fmt.Errorf("GET %s with Accept-Encoding %s: Content-Encoding %q", url, encoding, got)
		}
		return time.Since(start).Seconds(), float64(b), nil
	}
	var idTimes, gzTimes []float64
	for range n {
		sec, size, err := get("identity")
		if err != nil {
			return identity, gzipped, err
		}
		idTimes, identity.bytes = append(idTimes, sec), size
		if withGzip {
			if sec, size, err = get("gzip"); err != nil {
				return identity, gzipped, err
			}
			gzTimes, gzipped.bytes = append(gzTimes, sec), size
		}
	}
	slices.Sort(idTimes)
	identity.seconds = idTimes[len(idTimes)/2]
	if withGzip {
		slices.Sort(gzTimes)
		gzipped.seconds = gzTimes[len(gzTimes)/2]
	}
	return identity, gzipped, nil
}

// scrapeBest is scrapeMedian's fastest scrape instead of the median.
func scrapeBest(url string, n int) (float64, float64, error) {
	best, size := math.Inf(1), 0.0
	for range n {
		sec, b, err := scrapeMedian(url, 1)
		if err != nil {
			return 0, 0, err
		}
		best, size = min(best, sec), b
	}
	return best, size, nil
}

// largeFleet runs the 100k scenarios: ingest, memory, scrape, Prometheus,
// kill switch.
func (e *env) largeFleet(bare *proc, small *ingestResult) error {
	r, err := e.ingest(bare, e.large)
	if err != nil {
		return err
	}
	sent := r.sentinel
	defer func() { sent.stop() }()

	if err := e.scrape(bare, r); err != nil {
		e.out.note(fmt.Sprintf("scrape scenario failed: %v", err))
	}
	data := filepath.Join(e.dir, fmt.Sprintf("data-%d", e.large))
	if sent, err = e.prometheus(sent, data); err != nil {
		e.out.note(fmt.Sprintf("Prometheus scenario failed: %v", err))
	}
	if err := e.killSwitch(sent, data); err != nil {
		e.out.note(fmt.Sprintf("kill-switch scenario failed: %v", err))
	}
	return nil
}

// families returns the sentinel_agent_* families a /metrics page holds.
func families(url string) ([]string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	seen := map[string]bool{}
	var out []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if name, ok := strings.CutPrefix(sc.Text(), "# TYPE "); ok {
			name, _, _ = strings.Cut(name, " ")
			if strings.HasPrefix(name, "sentinel_agent_") && !seen[name] {
				seen[name] = true
				out = append(out, name)
			}
		}
	}
	return out, sc.Err()
}

// scrapeResult compares sentinel's scrape with the GaugeVec exporter's.
type scrapeResult struct {
	agents                     int
	sentSeconds, sentBytes     float64
	gzipSeconds, gzipBytes     float64 // sentinel, asked for gzip
	fleetBeats, fleetErrors    float64 // heartbeats of the fleet during those scrapes
	vecSeconds, vecBytes       float64
	sentRSS, vecRSS            int64
	sentRSSScraped             int64
	families                   []string
	quiet, scraping            *loadResult
	scrapesDuringLoad          int
	scrapeDuringLoadMaxSeconds float64
}

func (e *env) scrape(bare *proc, r *ingestResult) error {
	logf("scrape at %d agents", r.agents)
	sent := r.sentinel
	s := &scrapeResult{agents: r.agents, sentRSS: r.rssLoaded}
	var err error
	if s.families, err = families(sent.url + "/metrics"); err != nil {
		return err
	}
	// Identity against gzip while the fleet beats at its interval, as it
	// does between a real scraper's scrapes: each scrape sees agents changed
	// since the one before.
	fleetCtx, stopFleet := context.WithCancel(context.Background())
	started := make(chan struct{})
	type fleetRun struct {
		res *loadResult
		err error
	}
	fleetDone := make(chan fleetRun, 1)
	go func() {
		res, err := e.loadgenUntil(fleetCtx, started, sent, "--agents", strconv.Itoa(r.agents), "--protocol", "mixed", "--no-register",
			"--mode", "fleet", "--interval", fleetInterval.String(), "--connections", "8", "--duration", "0")
		fleetDone <- fleetRun{res, err}
	}()
	select {
	case <-started:
	case run := <-fleetDone:
		stopFleet()
		if run.err == nil {
			run.err = errors.New("the load generator ended before its load phase")
		}
		return fmt.Errorf("the fleet beating during the scrapes: %w", run.err)
	}
	id, gz, err := scrapeMedians(sent.url+"/metrics", 5, true)
	stopFleet()
	run := <-fleetDone
	if err != nil {
		return err
	}
	if run.err != nil {
		return fmt.Errorf("the fleet beating during the scrapes: %w", run.err)
	}
	s.sentSeconds, s.sentBytes, s.gzipSeconds, s.gzipBytes = id.seconds, id.bytes, gz.seconds, gz.bytes
	s.fleetBeats, s.fleetErrors = run.res.sum.Load.Requests, run.res.sum.Load.Errors
	s.sentRSSScraped = sent.rss()
	args := []string{"--web.listen-address", e.addr(), "gaugevec", "--agents", strconv.Itoa(r.agents)}
	for _, f := range s.families {
		args = append(args, "--family", f)
	}
	vec, err := e.start("gaugevec", e.serverCPU, nil, filepath.Join(e.bin, "refserver"), args...)
	if err != nil {
		return err
	}
	// Best of two: each takes seconds (the first pays for nothing more).
	if s.vecSeconds, s.vecBytes, err = scrapeBest(vec.url+"/metrics", 2); err != nil {
		vec.stop()
		return err
	}
	s.vecRSS = vec.rss()
	vec.stop()

	// Ingest while a scraper reads the whole page every second.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				sec, _, err := scrapeMedian(sent.url+"/metrics", 1)
				if err == nil {
					s.scrapesDuringLoad++
					s.scrapeDuringLoadMaxSeconds = max(s.scrapeDuringLoadMaxSeconds, sec)
				}
			}
		}
	}()
	rate := strconv.FormatFloat(r.rate, 'f', 0, 64)
	s.scraping, err = e.loadgen(sent, "--agents", strconv.Itoa(r.agents), "--protocol", "mixed", "--no-register",
		"--mode", "open", "--rate", rate, "--connections", r.connsOpen, "--duration", e.dur(10*time.Second, 5*time.Second))
	cancel()
	wg.Wait()
	if err != nil {
		return err
	}
	s.quiet = r.sentOpen
	e.out.scrape(s)
	return nil
}

// prometheus runs a real Prometheus scraping sentinel, then restarts
// sentinel with the trimmed collectors and does it again. It returns the
// running (trimmed) sentinel.
func (e *env) prometheus(sent *proc, data string) (*proc, error) {
	if _, err := exec.LookPath("prometheus"); err != nil {
		return sent, errors.New("prometheus is not installed (apt-get install prometheus)")
	}
	full, err := e.promRun(sent, "full")
	if err != nil {
		return sent, err
	}
	logf("restarting sentinel with %s", strings.Join(trimFlags, " "))
	sent.stop()
	trimmed, err := e.startSentinel("sentinel-trimmed", data, trimFlags)
	if err != nil {
		return sent, err
	}
	tr, err := e.promRun(trimmed, "trimmed")
	if err != nil {
		return trimmed, err
	}
	e.out.prometheus(full, tr)
	return trimmed, nil
}

type promResult struct {
	name          string
	agents        int
	scrapeSeconds float64
	samples       float64
	rss           int64
	headSeries    float64
	scrapes       float64
	waited        time.Duration
}

func (e *env) promRun(sent *proc, name string) (*promResult, error) {
	dir := filepath.Join(e.dir, "prom-"+name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	listen := e.addr()
	target := strings.TrimPrefix(sent.url, "http://")
	if err := os.WriteFile(cfg, []byte(`global:
  scrape_interval: 10s
  scrape_timeout: 10s
scrape_configs:
  - job_name: sentinel
    static_configs:
      - targets: ['`+target+`']
  - job_name: prometheus
    static_configs:
      - targets: ['`+strings.TrimPrefix(listen, "http://")+`']
`), 0o644); err != nil {
		return nil, err
	}
	logf("prometheus (%s families) scraping sentinel", name)
	prom, err := e.start("prometheus-"+name, e.genCPU, nil, "prometheus", "--config.file", cfg,
		"--storage.tsdb.path", filepath.Join(dir, "tsdb"), "--web.listen-address", listen, "--log.level", "warn")
	if err != nil {
		return nil, err
	}
	defer prom.stop()
	r := &promResult{name: name, agents: e.large}
	q := func(expr string) (float64, error) {
		resp, err := http.Get(prom.url + "/api/v1/query?query=" + urlQueryEscape(expr))
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		var out struct {
			Data struct {
				Result []struct {
					Value [2]any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return 0, err
		}
		if len(out.Data.Result) == 0 {
			return 0, fmt.Errorf("prometheus: no result for %s", expr)
		}
		s, _ := out.Data.Result[0].Value[1].(string)
		return strconv.ParseFloat(s, 64)
	}
	// Wait for three scrapes of sentinel (a Prometheus starved of CPU
	// takes long to ingest the first million new series), at most
	// promWait.
	const window = "[10m]"
	started := time.Now()
	for time.Since(started) < e.promWait() {
		time.Sleep(2 * time.Second)
		if n, err := q(`count_over_time(up{job="sentinel"}` + window + `)`); err == nil && n >= 3 {
			break
		}
	}
	r.waited = time.Since(started)
	r.rss = prom.rss()
	for _, m := range []struct {
		dst  *float64
		expr string
	}{
		{&r.scrapeSeconds, `avg_over_time(scrape_duration_seconds{job="sentinel"}` + window + `)`},
		{&r.samples, `scrape_samples_scraped{job="sentinel"}`},
		{&r.headSeries, `prometheus_tsdb_head_series`},
		{&r.scrapes, `count_over_time(up{job="sentinel"}` + window + `)`},
	} {
		v, err := q(m.expr)
		if err != nil && m.dst != &r.headSeries {
			return nil, err
		}
		*m.dst = v
	}
	if up, err := q(`min_over_time(up{job="sentinel"}` + window + `)`); err == nil && up < 1 {
		e.out.note(fmt.Sprintf("Prometheus (%s): some scrapes of sentinel failed (up was 0)", name))
	}
	return r, nil
}

func (e *env) promWait() time.Duration {
	if e.quick {
		return 30 * time.Second
	}
	return 120 * time.Second
}

func urlQueryEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

type killResult struct {
	agents                 int
	revocations, fsyncs    float64 // acknowledged per second
	revErrors, fsyncErrors int
	revokeAllSeconds       float64
	revokeAllAgents        int
	journalBytes           int64
	diskSeconds            float64
}

// killSwitch measures acknowledged revocations/s against a handler that
// fsyncs each request, and revoke-all against writing and fsyncing the
// same bytes.
func (e *env) killSwitch(sent *proc, data string) error {
	logf("kill switch")
	k := &killResult{agents: e.large}
	d := e.bridgeDuration()
	// A quarter of the fleet at most, each agent once, so that every call
	// is a new durable revocation and revoke-all still has most to do.
	limit := e.large / 4
	var err error
	if k.revocations, k.revErrors, err = e.revocations(sent, d, limit); err != nil {
		return err
	}
	ref, err := e.start("fsync", e.serverCPU, nil, filepath.Join(e.bin, "refserver"), "--web.listen-address", e.addr(),
		"fsync", "--file", filepath.Join(e.dir, "fsync.log"))
	if err != nil {
		return err
	}
	k.fsyncs, k.fsyncErrors, err = e.posts(ref.url, func(i int) string {
		return fmt.Sprintf("/api/v1/installations/loadgen-%07d/revoke", i)
	}, `{"reason":"bench","shutdown_timeout_ms":5000}`, d, limit)
	ref.stop()
	if err != nil {
		return err
	}

	// Whatever the durable files are called (journal, ledger), revoke-all
	// adds its records to them: count the directory.
	before := dirSize(data)
	if k.revokeAllSeconds, k.revokeAllAgents, err = revokeAll(sent); err != nil {
		return err
	}
	k.journalBytes = dirSize(data) - before
	if k.journalBytes > 0 {
		k.diskSeconds, err = writeSync(filepath.Join(data, "disk-reference"), k.journalBytes)
		if err != nil {
			return err
		}
	}
	e.out.killSwitch(k)
	return nil
}

// revocations revokes agents loadgen-0000000 and up, each once, from 32
// concurrent admin callers for at most d, and returns the acknowledged
// revocations per second and the failures.
func (e *env) revocations(sent *proc, d time.Duration, limit int) (float64, int, error) {
	return e.posts(sent.url, func(i int) string {
		return fmt.Sprintf("/api/v1/installations/loadgen-%07d/revoke", i)
	}, `{"reason":"bench","shutdown_timeout_ms":5000}`, d, limit)
}

// revokeAll revokes the whole tenant and returns how long the answer took
// and how many agents it newly revoked.
func revokeAll(sent *proc) (float64, int, error) {
	start := time.Now()
	status, body, err := post(sent.url+"/api/v1/revoke-all", `{"reason":"bench revoke-all","shutdown_timeout_ms":5000}`)
	if err != nil {
		return 0, 0, err
	}
	if status != http.StatusOK {
		return 0, 0, fmt.Errorf("revoke-all: %d %s", status, body)
	}
	seconds := time.Since(start).Seconds()
	var out struct {
		Revoked int `json:"revoked"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return 0, 0, fmt.Errorf("revoke-all answer: %w", err)
	}
	return seconds, out.Revoked, nil
}

// dirSize is the total size of the regular files in dir, snapshots left
// out (they are rewritten on a timer, not by the request).
func dirSize(dir string) int64 {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var n int64
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() && !strings.Contains(e.Name(), "snapshot") {
			n += fi.Size()
		}
	}
	return n
}

func writeSync(path string, n int64) (float64, error) {
	buf := bytes.Repeat([]byte{'x'}, int(n))
	start := time.Now()
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer os.Remove(path)
	if _, err := f.Write(buf); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return 0, err
	}
	return time.Since(start).Seconds(), f.Close()
}

// post POSTs body to url with the admin token.
func post(url, body string) (int, []byte, error) { return postAs(url, adminKey, body) }

// posts sends body to path(i) for i = 0, 1, … < limit from 32 concurrent
// callers, with the admin token, for at most d and returns the
// acknowledged (2xx) answers per second.
func (e *env) posts(base string, path func(int) string, body string, d time.Duration, limit int) (float64, int, error) {
	return e.postsAs(base, adminKey, func(i int) (string, string) { return path(i), body }, d, limit, nil)
}

// postsAs is posts with any token and request, reporting each
// acknowledged request's latency to observe (when not nil).
func (e *env) postsAs(base, token string, request func(int) (string, string), d time.Duration, limit int, observe func(float64)) (float64, int, error) {
	var (
		next, ok, failed atomic.Int64
		wg               sync.WaitGroup
	)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	start := time.Now()
	deadline := start.Add(d)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				i := int(next.Add(1) - 1)
				if i >= limit {
					return
				}
				path, body := request(i)
				req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				req.Header.Set("Content-Type", "application/json")
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 == 2 {
					ok.Add(1)
					if observe != nil {
						observe(time.Since(t0).Seconds())
					}
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(ok.Load()) / time.Since(start).Seconds(), int(failed.Load()), nil
}

// memory1M registers a million agents on a fresh sentinel with gctrace on,
// keeps them beating and reports RSS per agent and the GC's CPU share.
func (e *env) memory1M(bare *proc, small *ingestResult) error {
	n := e.huge
	logf("memory at %d agents", n)
	sent, err := e.startSentinel("sentinel-1M", filepath.Join(e.dir, "data-1M"), nil, "GODEBUG=gctrace=1")
	if err != nil {
		return err
	}
	defer sent.stop()
	empty := sent.rss()
	rate := strconv.FormatFloat(small.rate, 'f', 0, 64)
	res, err := e.loadgen(sent, "--agents", strconv.Itoa(n), "--protocol", "mixed", "--connections", "64",
		"--mode", "open", "--rate", rate, "--duration", "10s")
	if err != nil {
		return err
	}
	rss := sent.rss()
	// The Go heap's view, to explain the RSS: read after the RSS, as the
	// scrape renders the fleet (the self metrics are gathered before).
	heap := selfMetrics(sent.url+"/metrics", "go_memstats_heap_alloc_bytes", "go_memstats_next_gc_bytes", "go_memstats_heap_sys_bytes")
	e.out.memory1M(n, empty, rss, res, heap)
	return nil
}

// selfMetrics returns the values of unlabelled series of a /metrics page.
func selfMetrics(url string, names ...string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(url)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, n := range names {
			if v, ok := strings.CutPrefix(line, n+" "); ok {
				out[n], _ = strconv.ParseFloat(v, 64)
			}
		}
		if strings.HasPrefix(line, "sentinel_agent_") {
			break // the self families come first
		}
	}
	return out
}

// pushgateway pushes the same agents' series as push groups to a
// Pushgateway and scrapes it, against sentinel at the same fleet size.
func (e *env) pushgateway(small *ingestResult) error {
	if _, err := exec.LookPath("prometheus-pushgateway"); err != nil {
		return errors.New("prometheus-pushgateway is not installed (apt-get install prometheus-pushgateway)")
	}
	n := small.agents
	capTime := 60 * time.Second
	if e.quick {
		n, capTime = 1000, 15*time.Second
	}
	logf("pushgateway: %d push groups", n)
	pg, err := e.start("pushgateway", e.serverCPU, nil, "prometheus-pushgateway", "--web.listen-address", e.addr(),
		"--persistence.file=", "--log.level=warn")
	if err != nil {
		return err
	}
	defer pg.stop()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 60 * time.Second}
	var (
		next, pushed atomic.Int64
		wg           sync.WaitGroup
		mu           sync.Mutex
		marks        []time.Duration // time at which each 1 % of the groups was reached
	)
	start := time.Now()
	deadline := start.Add(capTime)
	step := max(int64(n/100), 1)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				id := fmt.Sprintf("loadgen-%07d", i)
				req, _ := http.NewRequest(http.MethodPut, pg.url+"/metrics/job/agent/agent_id/"+id, strings.NewReader(pushBody(id, i)))
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 == 2 {
					if c := pushed.Add(1); c%step == 0 {
						mu.Lock()
						marks = append(marks, time.Since(start))
						mu.Unlock()
					}
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	p := &pushResult{groups: int(pushed.Load()), wanted: n, seconds: elapsed.Seconds()}
	slices.Sort(marks)
	if len(marks) >= 2 {
		p.firstRate = float64(step) / marks[0].Seconds()
		p.lastRate = float64(step) / (marks[len(marks)-1] - marks[len(marks)-2]).Seconds()
	}
	if p.scrapeSeconds, p.scrapeBytes, err = scrapeMedian(pg.url+"/metrics", 3); err != nil {
		return err
	}
	p.sentinel = small
	e.out.pushgateway(p)
	return nil
}

type pushResult struct {
	groups, wanted             int
	seconds                    float64
	firstRate, lastRate        float64
	scrapeSeconds, scrapeBytes float64
	sentinel                   *ingestResult
}

// pushBody is the text a user would push per agent: its liveness and
// reported series (the Pushgateway adds push_time_seconds itself).
func pushBody(id string, i int64) string {
	return fmt.Sprintf(`# TYPE agent_heartbeat_interval_seconds gauge
agent_heartbeat_interval_seconds 60
# TYPE agent_uptime_seconds gauge
agent_uptime_seconds %d
# TYPE agent_requests_handled_total counter
agent_requests_handled_total %d
# TYPE agent_errors_total counter
agent_errors_total %d
# TYPE agent_latency_average_seconds gauge
agent_latency_average_seconds 0.145
# TYPE agent_info gauge
agent_info{platform="kubernetes",status="healthy",version="1.4.2",pod="%s-7f8a9b6c5d-x2x9q",namespace="production",node="ip-10-0-12-34.eu-west-1.compute.internal",image="registry.example.com/agents/support-bot:1.4.2"} 1
`, 3600+i, 1500+i, i%7, id)
}

// hookReceiver is the tenant's webhook endpoint: it answers 200 at once and
// notes when each delivery arrived.
type hookReceiver struct {
	url   string
	mu    sync.Mutex
	times []time.Time
}

func startHookReceiver() (*hookReceiver, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &hookReceiver{url: "http://" + l.Addr().String() + "/hook"}
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		// Only the bridge's announcements: revocations (agent.revoked) of
		// the kill-switch runs may still be delivered meanwhile.
		if r.Header.Get("X-ABS-Event") == "heartbeat.state_change" {
			h.mu.Lock()
			h.times = append(h.times, time.Now())
			h.mu.Unlock()
		}
		w.WriteHeader(http.StatusOK)
	}))
	return h, nil
}

func (h *hookReceiver) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.times)
}

type bridgeResult struct {
	agents                    int
	notifications, fsyncs     float64
	notifyErrors, fsyncErrors int
	p50, p99                  float64
	events                    int
	delivered                 int
	deliverSeconds            float64 // first to last delivery
	drainSeconds              float64 // last acknowledged notification to last delivery
	endpointRate              float64 // the endpoint fed directly
}

// bridge sends Alertmanager notifications (one AgentSilent alert each, a
// different agent each) to the small sentinel and measures the durable
// acknowledgements, then the outbox delivering the announcements to the
// local webhook endpoint.
func (e *env) bridge(small *ingestResult) (*bridgeResult, error) {
	sent := small.sentinel
	status, _, err := postAs(sent.url+"/api/v1/alertmanager", bridgeToken, `{}`)
	if err != nil {
		return nil, err
	}
	if status == http.StatusNotFound || status == http.StatusMethodNotAllowed {
		e.out.note("The bridge (POST /api/v1/alertmanager) is not in this build: no bridge figures.")
		return nil, nil
	}
	logf("bridge: Alertmanager notifications and outbox deliveries")
	d := e.bridgeDuration()
	b, err := e.measureBridge(sent, small.agents)
	if err != nil {
		return nil, err
	}
	limit := small.agents / 2
	ref, err := e.start("fsync", e.serverCPU, nil, filepath.Join(e.bin, "refserver"), "--web.listen-address", e.addr(),
		"fsync", "--file", filepath.Join(e.dir, "fsync-bridge.log"))
	if err != nil {
		return nil, err
	}
	b.fsyncs, b.fsyncErrors, err = e.postsAs(ref.url, bridgeToken, func(i int) (string, string) {
		return "/api/v1/alertmanager", `{"version":"4","alerts":[{"labels":{"agent_id":"` + fmt.Sprintf("loadgen-%07d", i) + `"}}]}`
	}, d, limit, nil)
	ref.stop()
	if err != nil {
		return nil, err
	}
	// The endpoint's own capacity: the same number of POSTs of a
	// delivery's size, 32 at a time, straight from a Go client.
	body := strings.Repeat("x", 420)
	endpoint := strings.TrimSuffix(e.hook.url, "/hook")
	rate, _, err := e.postsAs(endpoint, "", func(int) (string, string) { return "/hook", body }, d, max(b.delivered, 1000), nil)
	if err != nil {
		return nil, err
	}
	b.endpointRate = rate
	e.out.bridge(b)
	return b, nil
}

// bridgeDuration is how long the notifications of a bridge run are sent.
func (e *env) bridgeDuration() time.Duration {
	if e.quick {
		return 4 * time.Second
	}
	return 10 * time.Second
}

// measureBridge sends Alertmanager notifications to sent (one AgentSilent
// alert each, a different agent of the first agents/2 each) and measures
// the durable acknowledgements, then waits for the outbox to deliver the
// announcements to the local webhook endpoint.
func (e *env) measureBridge(sent *proc, agents int) (*bridgeResult, error) {
	b := &bridgeResult{agents: agents}
	d := e.bridgeDuration()
	limit := agents / 2
	var err error
	before := e.hook.count()
	startsAt := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339)
	var lat []float64
	var latMu sync.Mutex
	b.notifications, b.notifyErrors, err = e.postsAs(sent.url, bridgeToken, func(i int) (string, string) {
		id := fmt.Sprintf("loadgen-%07d", i)
		return "/api/v1/alertmanager", `{"version":"4","groupKey":"{}:{alertname=\"AgentSilent\"}","status":"firing","receiver":"sentinel",` +
			`"groupLabels":{"alertname":"AgentSilent"},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://alertmanager:9093","truncatedAlerts":0,` +
			`"alerts":[{"status":"firing","labels":{"alertname":"AgentSilent","severity":"warning","state":"SILENT","tenant":"` + tenant + `","agent_id":"` + id + `"},` +
			`"annotations":{"summary":"Agent is silent."},"startsAt":"` + startsAt + `","endsAt":"0001-01-01T00:00:00Z",` +
			`"generatorURL":"http://prometheus:9090/graph","fingerprint":"` + fmt.Sprintf("%016x", i) + `"}]}`
	}, d, limit, func(sec float64) {
		latMu.Lock()
		lat = append(lat, sec)
		latMu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	acked := time.Now()
	if len(lat) > 0 {
		slices.Sort(lat)
		b.p50, b.p99 = lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]
	}
	b.events = len(lat) - b.notifyErrors
	// Wait for the outbox to drain (or to stop making progress).
	last, lastChange := e.hook.count(), time.Now()
	for e.hook.count()-before < b.events && time.Since(lastChange) < 15*time.Second {
		time.Sleep(100 * time.Millisecond)
		if c := e.hook.count(); c != last {
			last, lastChange = c, time.Now()
		}
	}
	e.hook.mu.Lock()
	times := slices.Clone(e.hook.times[before:])
	e.hook.mu.Unlock()
	b.delivered = len(times)
	if len(times) > 1 {
		b.deliverSeconds = times[len(times)-1].Sub(times[0]).Seconds()
		b.drainSeconds = max(0, times[len(times)-1].Sub(acked).Seconds())
	}

	return b, nil
}

// postAs POSTs a JSON body to url with a bearer token.
func postAs(url, token, body string) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

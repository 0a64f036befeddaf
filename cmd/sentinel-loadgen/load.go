package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Protocols a simulated agent speaks.
const (
	protoBeacon = "beacon"
	protoABS    = "abs"
	protoMixed  = "mixed" // even agents Beacon, odd agents ABS
)

// Modes of a run.
const (
	modeClosed = "closed" // each connection sends its next heartbeat as soon as the last is answered
	modeOpen   = "open"   // heartbeats start at a fixed rate, whatever the answers take
	modeFleet  = "fleet"  // open loop at agents/interval: every agent beats once per interval
)

// Config is one run of the generator.
type Config struct {
	URL         string        // base URL of sentinel (or of a reference server)
	Token       string        // tenant API key: registers agents and beats them without runtime tokens
	Agents      int           // simulated agents, ids Prefix-0000000 …
	Prefix      string        // agent id prefix
	Protocol    string        // beacon, abs or mixed
	Mode        string        // closed, open or fleet
	Connections int           // keep-alive HTTP/1.1 connections (one worker each)
	Rate        float64       // open loop: heartbeats per second
	Interval    time.Duration // the agents' heartbeat interval (body; fleet mode's period)
	Duration    time.Duration // length of the measured phase; 0 with fleet mode: until cancelled
	Register    bool          // first send every agent one heartbeat, as fast as possible
	// RuntimeTokens makes Beacon agents beat with the runtime token their
	// registration returned, as beacon does, instead of the tenant key.
	RuntimeTokens bool
	Timeout       time.Duration // per request
	// Progress receives a progress line every ProgressEvery; nil: none.
	Progress      io.Writer
	ProgressEvery time.Duration
	// Marks receives "phase <name> started" as each phase starts, so that
	// a driver can sample the server's CPU time around the measured phase;
	// nil: none.
	Marks io.Writer
}

func (c *Config) validate() error {
	switch {
	case c.URL == "":
		return errors.New("--url is required")
	case c.Agents < 1:
		return fmt.Errorf("--agents must be at least 1, got %d", c.Agents)
	case c.Connections < 1:
		return fmt.Errorf("--connections must be at least 1, got %d", c.Connections)
	case c.Interval <= 0:
		return errors.New("--interval must be positive")
	}
	switch c.Protocol {
	case protoBeacon, protoABS, protoMixed:
	default:
		return fmt.Errorf("--protocol must be beacon, abs or mixed, got %q", c.Protocol)
	}
	switch c.Mode {
	case modeClosed:
		if c.Duration <= 0 {
			return errors.New("--duration must be positive in closed mode")
		}
	case modeOpen:
		if c.Rate <= 0 || c.Duration <= 0 {
			return errors.New("open mode needs a positive --rate and --duration")
		}
	case modeFleet:
	default:
		return fmt.Errorf("--mode must be closed, open or fleet, got %q", c.Mode)
	}
	if _, err := url.Parse(c.URL); err != nil {
		return fmt.Errorf("--url: %w", err)
	}
	return nil
}

// Phase is the outcome of one phase of a run (registration, or the
// measured load), as printed and written as JSON.
type Phase struct {
	Name            string         `json:"name"`
	Mode            string         `json:"mode"`
	TargetRate      float64        `json:"target_rate_per_second,omitempty"`
	Seconds         float64        `json:"seconds"`
	Requests        uint64         `json:"requests"`
	OK              uint64         `json:"ok"`
	Errors          uint64         `json:"errors"`
	Status          map[string]int `json:"status"`
	Throughput      float64        `json:"throughput_per_second"`
	Latency         Latency        `json:"latency_seconds"`
	LatencyMethod   string         `json:"latency_method"`
	FirstTransport  string         `json:"first_transport_error,omitempty"`
	MaxBehindSecond float64        `json:"max_behind_schedule_seconds,omitempty"`
}

// Latency are the percentiles of a phase, in seconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Summary is a whole run.
type Summary struct {
	URL         string  `json:"url"`
	Protocol    string  `json:"protocol"`
	Agents      int     `json:"agents"`
	Connections int     `json:"connections"`
	Register    *Phase  `json:"register,omitempty"`
	Load        *Phase  `json:"load,omitempty"`
	Interval    float64 `json:"interval_seconds"`
}

// generator holds what the workers of a run share.
type generator struct {
	cfg    Config
	tokens []string // runtime token per agent, set by registration; read-only after
	base   *url.URL
	path   string // base path, without its trailing slash
}

// Run registers the agents when asked, then runs the measured phase until
// its duration is over or ctx is cancelled.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "agent"
	}
	base, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("--url: %w", err)
	}
	g := &generator{cfg: cfg, base: base, path: trimSlash(base.Path)}
	if _, err := newConn(base, cfg.Timeout); err != nil {
		return nil, fmt.Errorf("--url: %w", err)
	}
	if cfg.RuntimeTokens && cfg.Protocol != protoABS {
		g.tokens = make([]string, cfg.Agents)
	}
	sum := &Summary{URL: cfg.URL, Protocol: cfg.Protocol, Agents: cfg.Agents,
		Connections: cfg.Connections, Interval: cfg.Interval.Seconds()}
	if cfg.Register {
		p, err := g.phase(ctx, "register", modeClosed, 0, 0, true)
		if err != nil {
			return nil, err
		}
		sum.Register = p
		if p.OK == 0 {
			return sum, fmt.Errorf("registration: no agent registered (%s)", p.describeFailures())
		}
	}
	if ctx.Err() != nil {
		return sum, nil
	}
	rate := cfg.Rate
	if cfg.Mode == modeFleet {
		rate = float64(cfg.Agents) / cfg.Interval.Seconds()
	}
	p, err := g.phase(ctx, "load", cfg.Mode, rate, cfg.Duration, false)
	if err != nil {
		return nil, err
	}
	sum.Load = p
	return sum, nil
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}

func (p *Phase) describeFailures() string {
	if p.FirstTransport != "" {
		return "first transport error: " + p.FirstTransport
	}
	b, _ := json.Marshal(p.Status)
	return "answers by status: " + string(b)
}

// counters are the live totals of a phase, read by the progress line.
type counters struct {
	sent, ok, failed atomic.Uint64
	behind           atomic.Int64 // the most nanoseconds a request started late
	mu               sync.Mutex
	status           map[int]int
	firstTransport   string
}

// phase runs one phase with cfg.Connections workers. once: every agent
// exactly once (registration), else closed loop for d, or open loop at
// rate for d (d == 0: until ctx is cancelled).
func (g *generator) phase(ctx context.Context, name, mode string, rate float64, d time.Duration, once bool) (*Phase, error) {
	var (
		cnt   = &counters{status: map[int]int{}}
		next  atomic.Int64 // the next request's sequence number, shared by the workers
		hists = make([]*Histogram, g.cfg.Connections)
		wg    sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	var deadline time.Time
	if d > 0 {
		deadline = start.Add(d)
	}
	var period time.Duration
	if mode != modeClosed {
		period = time.Duration(float64(time.Second) / rate)
		if period <= 0 {
			return nil, fmt.Errorf("rate %g per second is too high", rate)
		}
	}
	if g.cfg.Marks != nil {
		fmt.Fprintf(g.cfg.Marks, "phase %s started\n", name)
	}
	stopProgress := g.progress(name, cnt, start)
	for w := range hists {
		h := &Histogram{}
		hists[w] = h
		c, _ := newConn(g.base, g.cfg.Timeout) // the URL was checked by Run
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			var body, answer []byte
			for ctx.Err() == nil {
				k := next.Add(1) - 1
				if once && k >= int64(g.cfg.Agents) {
					return
				}
				// Open loop: request k is due at start + k·period, and its
				// latency counts from then, so a server that falls behind
				// is charged for the time requests waited to be sent
				// (coordinated omission corrected by construction, as wrk2).
				intended := time.Now()
				if period > 0 {
					intended = start.Add(time.Duration(k) * period)
					if !deadline.IsZero() && !intended.Before(deadline) {
						return
					}
					if wait := time.Until(intended); wait > 0 {
						select {
						case <-time.After(wait):
						case <-ctx.Done():
							return
						}
					} else {
						cnt.noteBehind(-wait)
					}
				} else if !deadline.IsZero() && !intended.Before(deadline) {
					return
				}
				agent := int(k % int64(g.cfg.Agents))
				var status int
				var err error
				body, answer, status, err = g.beat(ctx, c, agent, k, body, answer, once)
				if ctx.Err() != nil && err != nil {
					return // cancelled mid-request: not a server failure
				}
				h.Record(time.Since(intended))
				cnt.record(status, err)
			}
		}()
	}
	if !deadline.IsZero() {
		go func() {
			select {
			case <-time.After(time.Until(deadline) + g.cfg.Timeout):
				cancel() // stragglers past their timeout
			case <-ctx.Done():
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()

	total := &Histogram{}
	for _, h := range hists {
		total.Merge(h)
	}
	p := &Phase{Name: name, Mode: mode, TargetRate: rate, Seconds: elapsed.Seconds(),
		Requests: cnt.sent.Load(), OK: cnt.ok.Load(), Errors: cnt.failed.Load(),
		Status: map[string]int{}, FirstTransport: cnt.firstTransport,
		MaxBehindSecond: time.Duration(cnt.behind.Load()).Seconds()}
	for code, n := range cnt.status {
		p.Status[strconv.Itoa(code)] = n
	}
	if elapsed > 0 {
		p.Throughput = float64(p.Requests) / elapsed.Seconds()
	}
	lat := total
	if mode == modeClosed {
		// Each closed-loop worker meant to send one request per mean
		// service time; correct the stalls as HdrHistogram does.
		p.LatencyMethod = "closed loop, corrected for coordinated omission (HdrHistogram, expected interval = mean latency)"
		lat = total.Corrected(total.Mean())
	} else {
		p.LatencyMethod = "open loop, measured from each request's scheduled start (coordinated omission corrected)"
	}
	p.Latency = Latency{
		P50: lat.Quantile(0.50).Seconds(), P99: lat.Quantile(0.99).Seconds(),
		P999: lat.Quantile(0.999).Seconds(), Max: lat.Max().Seconds(), Mean: total.Mean().Seconds(),
	}
	return p, nil
}

func (c *counters) noteBehind(d time.Duration) {
	for {
		old := c.behind.Load()
		if int64(d) <= old || c.behind.CompareAndSwap(old, int64(d)) {
			return
		}
	}
}

func (c *counters) record(status int, err error) {
	c.sent.Add(1)
	if err == nil && status >= 200 && status < 300 {
		c.ok.Add(1)
	} else {
		c.failed.Add(1)
	}
	c.mu.Lock()
	if err != nil {
		status = 0 // transport error
		if c.firstTransport == "" {
			c.firstTransport = err.Error()
		}
	}
	c.status[status]++
	c.mu.Unlock()
}

// progress prints a line every ProgressEvery until the returned func is called.
func (g *generator) progress(name string, c *counters, start time.Time) func() {
	if g.cfg.Progress == nil || g.cfg.ProgressEvery <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(g.cfg.ProgressEvery)
		defer t.Stop()
		var last uint64
		lastAt := start
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				sent := c.sent.Load()
				rate := float64(sent-last) / now.Sub(lastAt).Seconds()
				last, lastAt = sent, now
				fmt.Fprintf(g.cfg.Progress, "%-8s %6.0fs  sent %9d  ok %9d  errors %7d  %9.0f/s  behind %v\n",
					name, now.Sub(start).Seconds(), sent, c.ok.Load(), c.failed.Load(), rate,
					time.Duration(c.behind.Load()).Round(time.Millisecond))
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// agentID is the id of agent i.
func (g *generator) agentID(i int) string {
	return g.cfg.Prefix + "-" + fmt.Sprintf("%07d", i)
}

func (g *generator) protocolOf(i int) string {
	if g.cfg.Protocol == protoMixed {
		if i%2 == 0 {
			return protoBeacon
		}
		return protoABS
	}
	return g.cfg.Protocol
}

// beat sends agent i's heartbeat number k, reusing buf for its body and
// answer for a registration's answer.
func (g *generator) beat(ctx context.Context, c *conn, i int, k int64, buf, answer []byte, register bool) ([]byte, []byte, int, error) {
	id := g.agentID(i)
	proto := g.protocolOf(i)
	buf = appendBody(buf[:0], id, k/int64(g.cfg.Agents), g.cfg.Interval)
	var target string
	if proto == protoBeacon {
		target = g.path + "/api/v1/installations/" + id + "/heartbeat"
	} else {
		target = g.path + "/v1/heartbeat?agentId=" + url.QueryEscape(id)
	}
	cred := g.cfg.Token
	if g.tokens != nil && proto == protoBeacon && !register && g.tokens[i] != "" {
		cred = g.tokens[i]
	}
	wantToken := register && g.tokens != nil && proto == protoBeacon
	var keep []byte
	if wantToken {
		keep = answer[:0]
		if keep == nil {
			keep = make([]byte, 0, 1024)
		}
	}
	status, keep, err := c.post(ctx, target, cred, buf, keep)
	if wantToken {
		answer = keep
		if err == nil && status == 200 {
			g.tokens[i] = runtimeToken(answer)
		}
	}
	return buf, answer, status, err
}

// runtimeToken returns the runtime token of a registration answer, "" when
// it carries none (an ABS answer, a reference server's fixed answer).
func runtimeToken(answer []byte) string {
	var a struct {
		RuntimeToken *struct {
			RuntimeToken string `json:"runtime_token"`
		} `json:"runtime_token"`
	}
	if json.Unmarshal(answer, &a) != nil || a.RuntimeToken == nil {
		return ""
	}
	return a.RuntimeToken.RuntimeToken
}

// appendBody appends a typical Beacon heartbeat body of a Kubernetes agent
// (the platform strings are what a real pod reports; ~480 bytes) for the
// n-th round of heartbeats of agent id: uptime and counters grow with n.
func appendBody(b []byte, id string, n int64, interval time.Duration) []byte {
	secs := int64(interval / time.Second)
	if secs < 1 {
		secs = 1
	}
	b = append(b, `{"status":"healthy","uptime_seconds":`...)
	b = strconv.AppendInt(b, 3600+n*secs, 10)
	b = append(b, `,"heartbeat_interval_seconds":`...)
	b = strconv.AppendInt(b, secs, 10)
	b = append(b, `,"version":"1.4.2","platform":{"type":"kubernetes","pod_name":"`...)
	b = append(b, id...)
	b = append(b, `-7f8a9b6c5d-x2x9q","namespace":"production","node":"ip-10-0-12-34.eu-west-1.compute.internal",`+
		`"container_id":"containerd://4f2a9c0e1b7d3a5f8e6c2b1d0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f",`+
		`"image":"registry.example.com/agents/support-bot:1.4.2","hostname":"`...)
	b = append(b, id...)
	b = append(b, `","os":"linux","pid":1},"metrics":{"requests_handled":`...)
	b = strconv.AppendInt(b, 1500+n*25, 10)
	b = append(b, `,"errors":`...)
	b = strconv.AppendInt(b, n/40, 10)
	b = append(b, `,"avg_latency_ms":145}}`...)
	return b
}

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// report collects the sections of BENCHMARKS.md in the order they ran.
type report struct {
	sections []string
	notes    []string
	headline []string
}

func (r *report) note(s string) {
	logf("note: %s", s)
	r.notes = append(r.notes, s)
}

func (r *report) add(s string) { r.sections = append(r.sections, s) }

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// verdict marks a ratio against its target: ok when it meets it.
func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func ms(sec float64) string {
	switch {
	case sec < 0.001:
		return fmt.Sprintf("%.0f µs", sec*1e6)
	case sec < 1:
		return fmt.Sprintf("%.2f ms", sec*1e3)
	}
	return fmt.Sprintf("%.2f s", sec)
}

func mib(b float64) string {
	return fmt.Sprintf("%.1f MiB", b/(1<<20))
}

func human(n int) string {
	switch {
	case n >= 1000000 && n%1000000 == 0:
		return fmt.Sprintf("%dM", n/1000000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func (r *report) ingest(in *ingestResult) {
	var b strings.Builder
	bc, sc := in.bareClosed.sum.Load, in.sentClosed.sum.Load
	bo, so := in.bareOpen.sum.Load, in.sentOpen.sum.Load
	thr := sc.Throughput / bc.Throughput
	cpu := in.sentClosed.cpuPerBeat / in.bareClosed.cpuPerBeat
	p99 := so.Latency.P99 / bo.Latency.P99
	fmt.Fprintf(&b, "## Ingest at %s agents\n\n", human(in.agents))
	fmt.Fprintf(&b, "Half the agents speak Beacon (with the runtime token their registration returned), half ABS; "+
		"~480-byte Kubernetes bodies. Saturation: closed loop over %s connections. Latency: open loop at %.0f/s, "+
		"half the bare handler's saturation, over %s connections, measured from each request's scheduled start "+
		"(these runs reuse the registered agents; their Beacon agents beat with the tenant key).\n\n",
		in.connsClosed, in.rate, in.connsOpen)
	b.WriteString("| | sentinel | bare net/http handler | ratio | target |\n|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| throughput, closed loop | %.0f/s | %.0f/s | **%s** | ≥ 0.8× (%s) |\n", sc.Throughput, bc.Throughput, ratio(sc.Throughput, bc.Throughput), verdict(thr >= 0.8))
	fmt.Fprintf(&b, "| server CPU per heartbeat (user+sys, /proc), closed loop | %s | %s | **%s** | ≤ 1.3× (%s) |\n",
		ms(in.sentClosed.cpuPerBeat), ms(in.bareClosed.cpuPerBeat), ratio(in.sentClosed.cpuPerBeat, in.bareClosed.cpuPerBeat), verdict(cpu <= 1.3))
	cpuOpen := in.sentOpen.cpuPerBeat / in.bareOpen.cpuPerBeat
	fmt.Fprintf(&b, "| server CPU per heartbeat at the same rate, open loop at %.0f/s | %s | %s | **%s** | ≤ 1.3× (%s) |\n",
		in.rate, ms(in.sentOpen.cpuPerBeat), ms(in.bareOpen.cpuPerBeat), ratio(in.sentOpen.cpuPerBeat, in.bareOpen.cpuPerBeat), verdict(cpuOpen <= 1.3))
	fmt.Fprintf(&b, "| p99 at %.0f/s | %s | %s | **%s** | ≤ 1.5× (%s) |\n", in.rate, ms(so.Latency.P99), ms(bo.Latency.P99), ratio(so.Latency.P99, bo.Latency.P99), verdict(p99 <= 1.5))
	fmt.Fprintf(&b, "| p50 / p99.9 at %.0f/s | %s / %s | %s / %s | %s / %s | |\n", in.rate,
		ms(so.Latency.P50), ms(so.Latency.P999), ms(bo.Latency.P50), ms(bo.Latency.P999),
		ratio(so.Latency.P50, bo.Latency.P50), ratio(so.Latency.P999, bo.Latency.P999))
	fmt.Fprintf(&b, "| closed-loop p99 (corrected) | %s | %s | %s | |\n", ms(sc.Latency.P99), ms(bc.Latency.P99), ratio(sc.Latency.P99, bc.Latency.P99))
	fmt.Fprintf(&b, "| registration of %s agents | %.1f s (%.0f/s) | %.1f s | %s | |\n", human(in.agents),
		in.sentClosed.sum.Register.Seconds, in.sentClosed.sum.Register.Throughput, in.bareClosed.sum.Register.Seconds,
		ratio(in.sentClosed.sum.Register.Throughput, in.bareClosed.sum.Register.Throughput))
	fmt.Fprintf(&b, "| errors (closed / open) | %.0f / %.0f | %.0f / %.0f | | |\n", sc.Errors, so.Errors, bc.Errors, bo.Errors)
	b.WriteString("\nCPU per heartbeat is given twice. In the closed loop each server runs at its own saturation, and the slower one " +
		"also pays, on every answer, for waking a load generator that had time to fall asleep (a bare handler slowed by a 7 µs spin " +
		"measured ~3 µs more per heartbeat than the spin, in a `perf` profile). In the open loop both carry the same rate.\n")
	if so.MaxBehind > 0.1 || bo.MaxBehind > 0.1 {
		fmt.Fprintf(&b, "\nThe open loop fell behind its schedule by up to %s (sentinel) and %s (bare): "+
			"that wait is in the latencies, as it would be for real agents.\n", ms(so.MaxBehind), ms(bo.MaxBehind))
	}
	fmt.Fprintf(&b, "\n/metrics at %s agents (%s) after a second of closed-loop heartbeats, which changed every chunk of the page: %s. The first scrape of this sentinel, which also allocated the page's buffers: %s; "+
		"three more with no agent changed since (each keeps the text of the one before): %s (median).\n",
		human(in.agents), mib(in.scrapeBytes), ms(in.scrapeSeconds), ms(in.scrapeFirstSeconds), ms(in.scrapeUnchangedSeconds))
	r.add(b.String())
	r.headline = append(r.headline, fmt.Sprintf("ingest at %s agents: %s the bare handler's throughput, %s its CPU per heartbeat at saturation (%s at the same rate), %s its p99 at half its saturation",
		human(in.agents), ratio(sc.Throughput, bc.Throughput), ratio(in.sentClosed.cpuPerBeat, in.bareClosed.cpuPerBeat),
		ratio(in.sentOpen.cpuPerBeat, in.bareOpen.cpuPerBeat), ratio(so.Latency.P99, bo.Latency.P99)))
	if in.agents > 10000 {
		per := float64(in.rssLoaded) / float64(in.agents)
		growth := float64(in.rssLoaded-in.rssEmpty) / float64(in.agents)
		r.add(fmt.Sprintf("## Memory at %s agents\n\n| | value | reference | ratio |\n|---|---|---|---|\n"+
			"| sentinel RSS after the ingest runs | %s | 1 KiB per agent target: %s | **%s** of the target |\n"+
			"| RSS per agent (total / agents) | %.0f B | 1024 B | %s |\n"+
			"| RSS growth per agent (minus the empty process's %s) | %.0f B | 1024 B | %s |\n\n"+
			"RSS from /proc (VmRSS), what a user's `ps` or cgroup shows, not only the Go heap; "+
			"measured before any scrape (a scrape keeps its rendered page buffers, see below).\n",
			human(in.agents), mib(float64(in.rssLoaded)), mib(float64(in.agents)*1024), ratio(per, 1024),
			per, ratio(per, 1024), mib(float64(in.rssEmpty)), growth, ratio(growth, 1024)))
	}
}

func (r *report) scrape(s *scrapeResult) {
	var b strings.Builder
	speed := s.vecSeconds / s.sentSeconds
	fmt.Fprintf(&b, "## Scrape at %s agents\n\n", human(s.agents))
	fmt.Fprintf(&b, "The reference is a client_golang exporter holding the same series (%d families: %s) in GaugeVecs, served by promhttp. "+
		"Identity encoding, time to the last byte: sentinel the median of 5 scrapes (alternating with 5 gzip scrapes), the exporter the best of 2. "+
		"Sentinel is pinned to one core here, so the gzip scrape's render and compression share it. "+
		"While sentinel's scrapes run, the fleet beats at its interval, every agent once every %.0f s (`sentinel-loadgen --mode fleet`: %.0f heartbeats, %.0f errors), "+
		"so that each scrape finds agents changed since the one before, as a real scraper does; "+
		"a scrape renders again only the families of the chunks of the page (16 runs of the store's shards) in which an agent changed them, "+
		"and a gzip answer compresses again only the parts whose text changed. About %.0f heartbeats fall between two scrapes, spread over the 16 chunks: "+
		"each chunk almost surely changes, as it does between a real scraper's scrapes of a fleet this size, so every family a heartbeat changes is rendered anew.\n\n",
		len(s.families), strings.Join(s.families, ", "), fleetInterval.Seconds(), s.fleetBeats, s.fleetErrors, s.fleetBeats/10)
	b.WriteString("| | sentinel | GaugeVec exporter | ratio | target |\n|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| scrape time | %s | %s | **%.1f× faster** | ≥ 20× (%s), ≤ 100 ms (%s) |\n",
		ms(s.sentSeconds), ms(s.vecSeconds), speed, verdict(speed >= 20), verdict(s.sentSeconds <= 0.1))
	fmt.Fprintf(&b, "| bytes | %s | %s | %s | |\n", mib(s.sentBytes), mib(s.vecBytes), ratio(s.sentBytes, s.vecBytes))
	gz := s.gzipSeconds / s.sentSeconds
	fmt.Fprintf(&b, "| sentinel asked for gzip (as Prometheus asks), time / bytes, against its identity answer | %s / %s | | **%.2f×** the time, %s the bytes | ≤ 2× the time (%s) |\n",
		ms(s.gzipSeconds), mib(s.gzipBytes), gz, ratio(s.gzipBytes, s.sentBytes), verdict(gz <= 2))
	fmt.Fprintf(&b, "| process RSS after the scrapes | %s (%s before the first) | %s | %s | |\n",
		mib(float64(s.sentRSSScraped)), mib(float64(s.sentRSS)), mib(float64(s.vecRSS)), ratio(float64(s.sentRSSScraped), float64(s.vecRSS)))
	q, w := s.quiet.sum.Load, s.scraping.sum.Load
	fmt.Fprintf(&b, "| ingest p99, open loop at the same rate, scraped every second | %s (%d scrapes, slowest %s) | %s without scrapes | %s | |\n",
		ms(w.Latency.P99), s.scrapesDuringLoad, ms(s.scrapeDuringLoadMaxSeconds), ms(q.Latency.P99), ratio(w.Latency.P99, q.Latency.P99))
	fmt.Fprintf(&b, "| ingest p99.9 while scraped | %s | %s | %s | |\n", ms(w.Latency.P999), ms(q.Latency.P999), ratio(w.Latency.P999, q.Latency.P999))
	r.add(b.String())
	r.headline = append(r.headline, fmt.Sprintf("scrape of %s agents: %s, %.0f× faster than a client_golang GaugeVec exporter of the same series",
		human(s.agents), ms(s.sentSeconds), speed))
}

func (r *report) prometheus(full, trimmed *promResult) {
	var b strings.Builder
	fmt.Fprintf(&b, "## Prometheus scraping sentinel at %s agents\n\n", human(full.agents))
	fmt.Fprintf(&b, "A real Prometheus (`prometheus --version`: %s), scrape interval and timeout 10 s, fresh TSDB each time, "+
		"until it had scraped sentinel three times (%s and %s). "+
		"Trimmed: sentinel restarted on the same state with `%s` (the families the alerting rules read stay).\n\n",
		version("prometheus"), full.waited.Round(time.Second), trimmed.waited.Round(time.Second), strings.Join(trimFlags, " "))
	b.WriteString("| | all families | trimmed | trimmed / all |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| samples per scrape | %.0f | %.0f | %s |\n", full.samples, trimmed.samples, ratio(trimmed.samples, full.samples))
	fmt.Fprintf(&b, "| scrape duration (Prometheus' `scrape_duration_seconds`, mean) | %s | %s | %s |\n", ms(full.scrapeSeconds), ms(trimmed.scrapeSeconds), ratio(trimmed.scrapeSeconds, full.scrapeSeconds))
	fmt.Fprintf(&b, "| Prometheus head series | %.0f | %.0f | %s |\n", full.headSeries, trimmed.headSeries, ratio(trimmed.headSeries, full.headSeries))
	fmt.Fprintf(&b, "| Prometheus RSS | %s | %s | %s |\n", mib(float64(full.rss)), mib(float64(trimmed.rss)), ratio(float64(trimmed.rss), float64(full.rss)))
	fmt.Fprintf(&b, "| scrapes in the window | %.0f | %.0f | |\n", full.scrapes, trimmed.scrapes)
	r.add(b.String())
	r.headline = append(r.headline, fmt.Sprintf("a real Prometheus scraping %s agents: %.0f samples in %s; trimmed to the rules' families, %s the samples and %s the Prometheus RSS",
		human(full.agents), full.samples, ms(full.scrapeSeconds), ratio(trimmed.samples, full.samples), ratio(float64(trimmed.rss), float64(full.rss))))
}

func (r *report) killSwitch(k *killResult) {
	var b strings.Builder
	fmt.Fprintf(&b, "## Kill switch at %s agents\n\n", human(k.agents))
	b.WriteString("Revocations: 32 concurrent admin callers, each revocation of a different agent, answered only once durable. " +
		"Reference: a handler that appends each request to a file and fsyncs it before answering, one at a time, on the same disk.\n\n")
	b.WriteString("| | sentinel | reference | ratio |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| acknowledged revocations/s | %.0f (%d errors) | %.0f fsynced requests/s (%d errors) | **%s** |\n",
		k.revocations, k.revErrors, k.fsyncs, k.fsyncErrors, ratio(k.revocations, k.fsyncs))
	fmt.Fprintf(&b, "| `POST /api/v1/revoke-all` (%d agents newly revoked, the others already were; journal +%s) | %s | writing and fsyncing %s once: %s | %s |\n",
		k.revokeAllAgents, mib(float64(k.journalBytes)), ms(k.revokeAllSeconds), mib(float64(k.journalBytes)), ms(k.diskSeconds), ratio(k.revokeAllSeconds, k.diskSeconds))
	r.add(b.String())
	r.headline = append(r.headline, fmt.Sprintf("kill switch: %.0f acknowledged revocations/s (%s a per-request fsync), revoke-all of %d agents in %s",
		k.revocations, ratio(k.revocations, k.fsyncs), k.revokeAllAgents, ms(k.revokeAllSeconds)))
}

func (r *report) memory1M(n int, empty, loaded int64, res *loadResult, heap map[string]float64) {
	per := float64(loaded) / float64(n)
	share := 0.0
	if res.serverCPU > 0 {
		share = res.gcCPU / res.serverCPU
	}
	l := res.sum.Load
	r.add(fmt.Sprintf("## Memory and GC at %s agents\n\n"+
		"A fresh sentinel (GODEBUG=gctrace=1), %s agents registered, then open-loop heartbeats at %.0f/s for %.0f s "+
		"(p99 %s, %.0f errors); no scrape.\n\n"+
		"| | value | reference | ratio | target |\n|---|---|---|---|---|\n"+
		"| RSS per agent (total / agents) | %.0f B (RSS %s) | 1024 B | **%s** | ≤ 1 KiB (%s) |\n"+
		"| RSS growth per agent | %.0f B | 1024 B | %s | |\n"+
		"| GC CPU share during the heartbeats | %.1f %% (%.2f s of %.2f s, %d cycles) | the process's whole CPU time | %.3f | |\n"+
		"| Go heap in use / next GC goal / heap obtained from the OS | %s / %s / %s | RSS %s | %s / %s / %s | |\n\n"+
		"GC CPU is the sum of the gctrace cycles' assist, background and stop-the-world CPU (idle marking left out) over the load phase, divided by the process's user+sys time from /proc over the same phase. "+
		"The heartbeat store's records and strings live in memory mapped outside the Go heap: they are in the RSS, not in the Go heap figures.\n",
		human(n), human(n), l.Throughput, l.Seconds, ms(l.Latency.P99), l.Errors,
		per, mib(float64(loaded)), ratio(per, 1024), verdict(per <= 1024),
		float64(loaded-empty)/float64(n), ratio(float64(loaded-empty)/float64(n), 1024),
		share*100, res.gcCPU, res.serverCPU, res.gcCycles, share,
		mib(heap["go_memstats_heap_alloc_bytes"]), mib(heap["go_memstats_next_gc_bytes"]), mib(heap["go_memstats_heap_sys_bytes"]), mib(float64(loaded)),
		ratio(heap["go_memstats_heap_alloc_bytes"], float64(loaded)), ratio(heap["go_memstats_next_gc_bytes"], float64(loaded)), ratio(heap["go_memstats_heap_sys_bytes"], float64(loaded))))
	r.headline = append(r.headline, fmt.Sprintf("memory: %.0f B of RSS per agent at %s agents, GC %.1f %% of the CPU under ingest", per, human(n), share*100))
}

func (r *report) pushgateway(p *pushResult) {
	var b strings.Builder
	s := p.sentinel
	rate := float64(p.groups) / p.seconds
	b.WriteString("## Pushgateway, the alternative users pick today\n\n")
	fmt.Fprintf(&b, "`prometheus-pushgateway` (%s, no persistence file), each agent a push group (`PUT /metrics/job/agent/agent_id/<id>`, "+
		"its interval, uptime, counters, latency and info series), 8 concurrent pushers, until %d groups or the time cap. "+
		"Sentinel figures from the ingest run at %s agents above.\n\n", version("prometheus-pushgateway"), p.wanted, human(s.agents))
	b.WriteString("| | sentinel | Pushgateway | ratio |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| updates/s (heartbeats vs pushes) | %.0f/s | %.0f/s overall (%d groups in %.0f s) | **%s** |\n",
		s.sentClosed.sum.Load.Throughput, rate, p.groups, p.seconds, ratio(s.sentClosed.sum.Load.Throughput, rate))
	if p.firstRate > 0 {
		fmt.Fprintf(&b, "| Pushgateway push rate, first → last 1 %% of the groups pushed | | %.0f/s → %.0f/s | |\n", p.firstRate, p.lastRate)
	}
	fmt.Fprintf(&b, "| scrape time | %s (%s agents) | %s (%d groups) | %s |\n",
		ms(s.scrapeSeconds), human(s.agents), ms(p.scrapeSeconds), p.groups, ratio(p.scrapeSeconds, s.scrapeSeconds))
	fmt.Fprintf(&b, "| scrape bytes | %s | %s | |\n", mib(s.scrapeBytes), mib(p.scrapeBytes))
	if p.groups < p.wanted {
		fmt.Fprintf(&b, "\nThe Pushgateway took only %d of the %d groups within the time cap.\n", p.groups, p.wanted)
	}
	r.add(b.String())
	r.headline = append(r.headline, fmt.Sprintf("Pushgateway: %.0f pushes/s against sentinel's %.0f heartbeats/s (%s)",
		rate, s.sentClosed.sum.Load.Throughput, ratio(s.sentClosed.sum.Load.Throughput, rate)))
}

func version(cmd string) string {
	out, err := exec.Command(cmd, "--version").CombinedOutput()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		mem = strings.Join(strings.Fields(line)[1:], " ")
	}
	return fmt.Sprintf("%d × %s, %s RAM", onlineCPUs(), model, mem)
}

// busy reports whether a load average ("1.23 0.98 0.50") says other work
// ran: over one runnable task a minute on average.
func busy(loadavg string) bool {
	first, _, _ := strings.Cut(loadavg, " ")
	v, err := strconv.ParseFloat(first, 64)
	return err != nil || v > 1
}

func cmdOut(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// commit names the checked-out commit, "-dirty" when tracked files other
// than the report itself (which the last run left changed) differ from it.
func commit(report string) string {
	c := cmdOut("git", "rev-parse", "--short=12", "HEAD")
	if c == "unknown" {
		return c
	}
	if changed := cmdOut("git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)"+report); changed != "" {
		c += "-dirty"
	}
	return c
}

func (e *env) markdown() []byte {
	var b bytes.Buffer
	r := e.out
	b.WriteString("# Benchmarks\n\n")
	b.WriteString("Generated by `make bench` (`scripts/bench`); do not edit by hand. Every figure stands next to a reference " +
		"measured in the same run on the same machine, and the ratio is what to read: absolute figures move with the machine.\n\n")
	if e.quick {
		b.WriteString("**This is the quick subset (`make bench-quick`), not the full run.**\n\n")
	}
	fmt.Fprintf(&b, "- Machine: %s\n", machine())
	fmt.Fprintf(&b, "- Kernel: %s\n", cmdOut("uname", "-sr"))
	fmt.Fprintf(&b, "- Go: %s\n", cmdOut("go", "version"))
	fmt.Fprintf(&b, "- Commit: %s\n", commit(e.reportFile))
	fmt.Fprintf(&b, "- Run: %s, %s; load average %s before, %s after\n", e.started.UTC().Format(time.RFC3339),
		time.Since(e.started).Round(time.Second), e.loadBefore, loadAvg())
	if e.taskset {
		fmt.Fprintf(&b, "- Pinning: servers under test on CPU %s, load generator, scrapers and Prometheus on CPU %s (taskset)\n", e.serverCPU, e.genCPU)
	} else {
		b.WriteString("- Pinning: none (taskset missing or a single CPU)\n")
	}
	if busy(e.loadBefore) {
		b.WriteString("\n**The machine was shared**: other work ran on it when the run started (see the load average), " +
			"so absolute figures are low and noisy; both sides of each ratio ran interleaved under the same load.\n\n")
	} else {
		b.WriteString("\nNothing else ran on the machine when the run started (see the load average).\n\n")
	}
	if len(r.headline) > 0 {
		b.WriteString("## Headline\n\n")
		for _, h := range r.headline {
			fmt.Fprintf(&b, "- %s\n", h)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "## How to reproduce\n\n```sh\nmake bench        # everything below, under 15 minutes here (this run: %s), writes BENCHMARKS.md\n"+
		"make bench-quick  # a one-minute subset (5k agents), writes bin/BENCHMARKS-quick.md\n```\n\n", time.Since(e.started).Round(time.Second))
	b.WriteString("Needs `taskset` (util-linux), `prometheus`, `prometheus-pushgateway` and `postgresql` (Debian packages) and ~3 GB of free memory. " +
		"The load comes from `sentinel-loadgen` (see the README); the reference servers are `scripts/bench/refserver`.\n\n")
	for _, s := range r.sections {
		b.WriteString(s)
		b.WriteString("\n")
	}
	if len(r.notes) > 0 {
		b.WriteString("## Notes from this run\n\n")
		for _, n := range r.notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.Bytes()
}

func (r *report) bridge(b *bridgeResult) {
	var s strings.Builder
	fmt.Fprintf(&s, "## Bridge at %s agents (embedded store)\n\n", human(b.agents))
	s.WriteString("Alertmanager notifications (webhook payload version 4), each one `AgentSilent` alert firing for a different agent, " +
		"from 32 concurrent callers: each answer 200 means the announcement and its outgoing event are durably committed. " +
		"Reference: the handler that fsyncs each request before answering. Then the outbox delivers the events, signed, " +
		"to a local endpoint that answers 200 at once; reference: that endpoint fed the same number of POSTs directly by a Go client, 32 at a time. " +
		"The same on PostgreSQL follows in its own section.\n\n")
	s.WriteString("| | sentinel | reference | ratio |\n|---|---|---|---|\n")
	fmt.Fprintf(&s, "| notifications acknowledged (committed)/s | %.0f (%d errors) | %.0f fsynced requests/s | **%s** |\n",
		b.notifications, b.notifyErrors, b.fsyncs, ratio(b.notifications, b.fsyncs))
	fmt.Fprintf(&s, "| notification → committed, p50 / p99 | %s / %s | | |\n", ms(b.p50), ms(b.p99))
	rate := 0.0
	if b.deliverSeconds > 0 {
		rate = float64(b.delivered) / b.deliverSeconds
	}
	fmt.Fprintf(&s, "| outbox deliveries/s to the local endpoint | %.0f (%d of %d events in %.1f s; drained %.1f s after the last notification) | the endpoint's own %.0f/s | **%s** |\n",
		rate, b.delivered, b.events, b.deliverSeconds, b.drainSeconds, b.endpointRate, ratio(rate, b.endpointRate))
	r.add(s.String())
	r.headline = append(r.headline, fmt.Sprintf("bridge: %.0f Alertmanager notifications committed/s (%s a per-request fsync), outbox %.0f deliveries/s",
		b.notifications, ratio(b.notifications, b.fsyncs), rate))
}

// Command refserver is what the benchmark compares sentinel against, in
// the same run on the same machine:
//
//   - bare: a plain net/http handler that reads the request body and writes
//     a fixed JSON answer, the floor of any heartbeat receiver in Go;
//   - gaugevec: a client_golang exporter holding the per-agent series of N
//     agents in GaugeVecs, served by promhttp, what an exporter written the
//     usual way would cost;
//   - fsync: a handler that appends a record to a file and fsyncs it before
//     answering, one request at a time, the naive durable write that a
//     kill switch's group commit is measured against.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	a := kingpin.New("refserver", "Reference servers for sentinel's benchmark.")
	listen := a.Flag("web.listen-address", "Address to listen on.").Default("127.0.0.1:9470").String()
	bare := a.Command("bare", "Read the body, answer a fixed JSON.")
	gauge := a.Command("gaugevec", "Serve N agents' series from client_golang GaugeVecs.")
	agents := gauge.Flag("agents", "Agents whose series the exporter holds.").Default("100000").Int()
	families := gauge.Flag("family", "Per-agent families to hold (repeatable), those sentinel exposes; default all of them.").Strings()
	fsync := a.Command("fsync", "Append and fsync a record per request before answering.")
	file := fsync.Flag("file", "File to append to.").Required().String()
	cmd, err := a.Parse(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "refserver: %v\n", err)
		return 2
	}
	var h http.Handler
	switch cmd {
	case bare.FullCommand():
		h = bareHandler()
	case gauge.FullCommand():
		h = gaugeVecHandler(*agents, *families)
	case fsync.FullCommand():
		f, err := os.OpenFile(*file, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			fmt.Fprintf(os.Stderr, "refserver: %v\n", err)
			return 1
		}
		defer f.Close()
		h = fsyncHandler(f)
	}
	if err := http.ListenAndServe(*listen, h); err != nil {
		fmt.Fprintf(os.Stderr, "refserver: %v\n", err)
		return 1
	}
	return 0
}

var answer = []byte(`{"installation_id":"agent","lease_renewed":true,"state":"ACTIVE","lease_expires_at":"2026-01-01T00:05:00Z","next_heartbeat_at":"2026-01-01T00:01:00Z","heartbeat_interval_seconds":60,"command":null,"refreshed_token":null}`)

func bareHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(answer)
	})
}

func fsyncHandler(f *os.File) http.Handler {
	var mu sync.Mutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rec := append([]byte(r.URL.Path+" "), body...)
		rec = append(rec, '\n')
		mu.Lock()
		_, err = f.Write(rec)
		if err == nil {
			err = f.Sync()
		}
		mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"revoked":true}`))
	})
}

// gaugeVecHandler fills GaugeVecs with the same families, label sets and
// values sentinel exposes for n agents of one tenant whose bodies are the
// load generator's Kubernetes heartbeats. Only the families named in only
// are registered (all when empty), so that the exporter holds exactly the
// series of the sentinel it is compared with.
func gaugeVecHandler(n int, only []string) http.Handler {
	reg := prometheus.NewRegistry()
	want := map[string]bool{}
	for _, f := range only {
		want[f] = true
	}
	register := func(name string, c prometheus.Collector) {
		if len(want) == 0 || want[name] {
			reg.MustRegister(c)
		}
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	labels := []string{"tenant", "agent_id"}
	gauge := func(name string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: name + "."}, labels)
		register(name, g)
		return g
	}
	counter := func(name string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: name + "."}, labels)
		register(name, c)
		return c
	}
	var (
		last     = gauge("sentinel_agent_last_heartbeat_timestamp_seconds")
		interval = gauge("sentinel_agent_heartbeat_interval_seconds")
		lease    = gauge("sentinel_agent_lease_expiry_timestamp_seconds")
		zombie   = gauge("sentinel_agent_zombie_deadline_timestamp_seconds")
		stopped  = gauge("sentinel_agent_stopped")
		revoked  = gauge("sentinel_agent_revoked")
		paused   = gauge("sentinel_agent_paused")
		uptime   = gauge("sentinel_agent_uptime_seconds")
		requests = counter("sentinel_agent_requests_handled_total")
		errs     = counter("sentinel_agent_errors_total")
		latency  = gauge("sentinel_agent_latency_average_seconds")
		info     = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sentinel_agent_info", Help: "info."},
			[]string{"tenant", "agent_id", "platform", "status", "version", "hostname", "pod", "namespace",
				"node", "container_id", "image", "function", "region"})
	)
	register("sentinel_agent_info", info)
	const now = 1.7646e9
	for i := range n {
		id := "loadgen-" + fmt.Sprintf("%07d", i)
		lv := []string{"bench", id}
		t := now + float64(i%60)
		last.WithLabelValues(lv...).Set(t)
		interval.WithLabelValues(lv...).Set(60)
		lease.WithLabelValues(lv...).Set(t + 300)
		zombie.WithLabelValues(lv...).Set(t + 900)
		stopped.WithLabelValues(lv...).Set(0)
		revoked.WithLabelValues(lv...).Set(0)
		paused.WithLabelValues(lv...).Set(0)
		uptime.WithLabelValues(lv...).Set(3600 + float64(i))
		requests.WithLabelValues(lv...).Add(1500 + float64(i))
		errs.WithLabelValues(lv...).Add(float64(i % 7))
		latency.WithLabelValues(lv...).Set(0.145)
		info.WithLabelValues("bench", id, "kubernetes", "healthy", "1.4.2", id, id+"-7f8a9b6c5d-x2x9q", "production",
			"ip-10-0-12-34.eu-west-1.compute.internal",
			"containerd://4f2a9c0e1b7d3a5f8e6c2b1d0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f",
			"registry.example.com/agents/support-bot:1.4.2", "", "").Set(1)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("agents " + strconv.Itoa(n) + "\n"))
	})
	return mux
}

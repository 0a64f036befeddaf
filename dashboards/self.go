package dashboards

import "fmt"

// Self is sentinel's own health: whether Prometheus scrapes it, its
// configuration reloads and snapshots, and its Go runtime.
func Self() Dashboard {
	const sentinel = `job="sentinel",instance=~"$instance"`
	q := func(format string) string { return fmt.Sprintf(format, sentinel) }

	return dashboard("sentinel-self", "Sentinel / Self",
		"Sentinel's own health: scrapes, configuration reloads, snapshots of the agent state, Go runtime.",
		[]Variable{labelValues("instance", "instance", `up{job="sentinel"}`, true)},
		row(4,
			stat("Instances up", "Sentinel instances Prometheus scrapes successfully. With none, no agent alert can fire.", "none",
				instant(q(`sum(up{%s})`), "up")).
				withThresholds(thresholds("red", at(1, "green"))).background(),
			stat("Config reload", "Whether the last configuration reload succeeded on every instance.", "none",
				instant(q(`min(sentinel_config_last_reload_successful{%s})`), "reload")).
				withMappings(flag("failed", "red", "ok", "green")),
			stat("Config loaded", "Time since the oldest instance last loaded its configuration.", "s",
				instant(q(`time() - min(sentinel_config_last_reload_success_timestamp_seconds{%s})`), "age")),
			stat("Snapshot age", "Time since the oldest instance last saved its agent state; what a crash would lose.", "s",
				instant(q(`time() - min(sentinel_snapshot_last_success_timestamp_seconds{%s})`), "age")),
			stat("Snapshot duration", "Duration of the slowest instance's last snapshot.", "s",
				instant(q(`max(sentinel_snapshot_duration_seconds{%s})`), "duration")),
			stat("Snapshot failures", "Snapshots that failed in the dashboard's time range.", "none",
				instant(q(`sum(increase(sentinel_snapshot_failures_total{%s}[$__range]))`), "failures")).
				withThresholds(thresholds("green", at(1, "red"))).background(),
		),
		row(8,
			timeseries("Up", "up per sentinel instance: 1 when Prometheus scraped it.", "none",
				series(q(`up{%s}`), "{{instance}}")),
			timeseries("Scrape duration", "How long Prometheus takes to scrape each instance; grows with the agents.", "s",
				series(q(`scrape_duration_seconds{%s}`), "{{instance}}")),
			timeseries("Samples per scrape", "Series in each scrape, about ten per agent.", "none",
				series(q(`scrape_samples_scraped{%s}`), "{{instance}}")),
		),
		row(8,
			timeseries("Snapshot age", "Time since each instance last saved its agent state.", "s",
				series(q(`time() - sentinel_snapshot_last_success_timestamp_seconds{%s}`), "{{instance}}")),
			timeseries("Snapshot duration", "Duration of each instance's last snapshot.", "s",
				series(q(`sentinel_snapshot_duration_seconds{%s}`), "{{instance}}")),
		),
		row(8,
			timeseries("Memory", "Resident memory and Go heap in use.", "bytes",
				series(q(`process_resident_memory_bytes{%s}`), "{{instance}} resident"),
				series(q(`go_memstats_heap_inuse_bytes{%s}`), "{{instance}} heap in use")),
			timeseries("Time in GC", "Share of time the Go garbage collector's pauses take.", "percentunit",
				series(q(`rate(go_gc_duration_seconds_sum{%s}[$__rate_interval])`), "{{instance}}")),
			timeseries("CPU", "CPU seconds used per second.", "none",
				series(q(`rate(process_cpu_seconds_total{%s}[$__rate_interval])`), "{{instance}}")),
			timeseries("Goroutines", "Goroutines of each instance.", "none",
				series(q(`go_goroutines{%s}`), "{{instance}}")),
		),
		row(5,
			table("Build", "The version each instance runs (sentinel_build_info).",
				tableQuery(q(`sentinel_build_info{%s}`))).
				organize([]string{"Time", "Value", "__name__", "job", "tags"},
					"instance", "Instance",
					"version", "Version",
					"revision", "Revision",
					"branch", "Branch",
					"goversion", "Go",
					"goos", "OS",
					"goarch", "Arch",
				),
		),
	)
}

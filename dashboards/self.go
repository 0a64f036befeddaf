package dashboards

import "fmt"

// BridgeMetrics are the metric families of the Alertmanager bridge and the
// webhook outbox that the Self dashboard's delivery and pipeline panels read.
// A sentinel without the bridge exposes none of them, and those panels then
// show no data.
var BridgeMetrics = []string{
	"sentinel_webhook_deliveries_total",
	"sentinel_webhook_outbox_pending",
	"sentinel_webhook_endpoint_disabled",
	"sentinel_alertmanager_notifications_total",
	"sentinel_pipeline_watchdog_last_seen_timestamp_seconds",
}

// Self is sentinel's own health: whether Prometheus scrapes it, its
// configuration reloads and snapshots, the webhook deliveries and the
// alerting pipeline it watches, and its Go runtime.
func Self() Dashboard {
	const sentinel = `job="sentinel",instance=~"$instance"`
	q := func(format string) string { return fmt.Sprintf(format, sentinel) }

	return dashboard("sentinel-self", "Sentinel / Self",
		"Sentinel's own health: scrapes, configuration reloads, snapshots of the agent state, webhook deliveries, the alerting pipeline, Go runtime.",
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
		// Deliveries and the pipeline. The outbox is shared by the replicas
		// of a PostgreSQL setup, so every instance reports the same backlog:
		// max, never sum.
		row(4,
			stat("Outbox pending", "Webhook events waiting for delivery, retries included.", "none",
				instant(q(`max(sentinel_webhook_outbox_pending{%s})`), "pending")).
				withThresholds(thresholds("green", at(100, "orange"), at(1000, "red"))),
			stat("Deliveries failing", "Share of webhook delivery attempts that failed in the last 5 minutes.", "percentunit",
				instant(q(`sum(rate(sentinel_webhook_deliveries_total{%[1]s,result="failed"}[5m])) / sum(rate(sentinel_webhook_deliveries_total{%[1]s}[5m]))`), "failing")).
				withThresholds(thresholds("green", at(0.05, "orange"), at(0.5, "red"))),
			stat("Endpoints disabled", "Tenants whose webhook endpoint answered 410 Gone: nothing is delivered to them until it is re-enabled.", "none",
				instant(q(`sum(max by (tenant) (sentinel_webhook_endpoint_disabled{%s}))`), "disabled")).
				withThresholds(thresholds("green", at(1, "red"))).background(),
			stat("Watchdog last seen", "Time since Alertmanager's Watchdog alert last reached the bridge. Past bridge.watchdog.timeout (5m) the pipeline is silent.", "s",
				instant(q(`time() - max(sentinel_pipeline_watchdog_last_seen_timestamp_seconds{%s})`), "age")).
				withThresholds(thresholds("green", at(300, "red"))).background(),
			stat("Notifications", "Alertmanager notifications the bridge received in the dashboard's time range (the Watchdog's included).", "none",
				instant(q(`sum(increase(sentinel_alertmanager_notifications_total{%s}[$__range]))`), "notifications")).
				withThresholds(thresholds("text")),
		),
		row(8,
			timeseries("Webhook deliveries", "Delivery attempts per second, by result.", "reqps",
				series(q(`sum by (result) (rate(sentinel_webhook_deliveries_total{%s}[$__rate_interval]))`), "{{result}}")),
			timeseries("Outbox pending", "Webhook events waiting, as each instance sees the outbox.", "none",
				series(q(`sentinel_webhook_outbox_pending{%s}`), "{{instance}}")),
			timeseries("Alertmanager notifications", "Notifications Alertmanager posted to the bridge, per second, by result.", "reqps",
				series(q(`sum by (result) (rate(sentinel_alertmanager_notifications_total{%s}[$__rate_interval]))`), "{{result}}")),
			timeseries("Watchdog age", "Time since each instance last received the Watchdog alert.", "s",
				series(q(`time() - sentinel_pipeline_watchdog_last_seen_timestamp_seconds{%s}`), "{{instance}}")),
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

package dashboards

import "fmt"

// Agent is one agent: its liveness as the alerts see it, what it reports
// about itself, and whether it stopped or was revoked.
func Agent() Dashboard {
	const agent = `tenant="$tenant",agent_id="$agent_id"`
	q := func(format string) string { return fmt.Sprintf(format, agent) }

	stopped := q(`max(sentinel_agent_stopped{%s})`)
	revoked := q(`max(sentinel_agent_revoked{%s})`)
	// The liveness thresholds of alerts/sentinel.rules.yml (and sentinel's
	// default silent_after and zombie_after).
	missedSteps := thresholds("green", at(5, "orange"), at(15, "red"))

	return dashboard("sentinel-agent", "Sentinel / Agent",
		"One agent: missed heartbeats, last heartbeat, what the agent reports, its metadata, stopped and revoked.",
		[]Variable{
			labelValues("tenant", "tenant", "sentinel_agents", false),
			labelValues("agent_id", "agent_id", `sentinel_agent_info{tenant="$tenant"}`, false),
		},
		row(4,
			stat("Missed heartbeats",
				"Heartbeats missed, as the AgentSilent and AgentZombie alerts count them: SILENT from 5, ZOMBIE from 15.", "none",
				instant(q(`sentinel:agent_missed_heartbeats{%s}`), "missed")).
				withThresholds(missedSteps).background(),
			stat("Last heartbeat", "Time since the last heartbeat any sentinel instance accepted.", "s",
				instant(q(`time() - sentinel:agent_last_heartbeat_timestamp_seconds:max{%s}`), "age")),
			stat("Heartbeat interval", "The effective interval the agent beats at.", "s",
				instant(q(`max(sentinel_agent_heartbeat_interval_seconds{%s})`), "interval")),
			stat("Uptime", "Agent-reported uptime.", "s",
				instant(q(`max(sentinel_agent_uptime_seconds{%s})`), "uptime")),
			stat("Stopped", "Whether the agent announced its shutdown; a stopped agent raises no alert.", "none",
				instant(stopped, "stopped")).
				withMappings(flag("no", "green", "yes", "blue")),
			stat("Revoked", "Whether the kill switch revoked the agent; a revoked agent raises no alert.", "none",
				instant(revoked, "revoked")).
				withMappings(flag("no", "green", "yes", "purple")),
		),
		row(8,
			timeseries("Missed heartbeats",
				"Heartbeats missed over time; the dashed lines are the SILENT and ZOMBIE thresholds.", "none",
				series(q(`sentinel:agent_missed_heartbeats{%s}`), "missed")).
				withThresholds(missedSteps),
			timeseries("Last heartbeat age",
				"Time since the last heartbeat, against the interval the agent promised.", "s",
				series(q(`time() - sentinel:agent_last_heartbeat_timestamp_seconds:max{%s}`), "since last heartbeat"),
				series(q(`max(sentinel_agent_heartbeat_interval_seconds{%s})`), "interval")),
		),
		row(8,
			timeseries("Requests and errors", "Agent-reported requests handled and errors, per second.", "reqps",
				series(q(`max(rate(sentinel_agent_requests_handled_total{%s}[$__rate_interval]))`), "requests"),
				series(q(`max(rate(sentinel_agent_errors_total{%s}[$__rate_interval]))`), "errors")).
				withOverride("errors", fixedColor("red")),
			timeseries("Average latency", "Agent-reported average request latency.", "s",
				series(q(`max(sentinel_agent_latency_average_seconds{%s})`), "average latency")),
			timeseries("Uptime", "Agent-reported uptime; a drop is a restart.", "s",
				series(q(`max(sentinel_agent_uptime_seconds{%s})`), "uptime")),
		),
		row(6,
			stateTimeline("Stopped and revoked", "When the agent was stopped or revoked.",
				series(stopped, "stopped"),
				series(revoked, "revoked")).
				withMappings(flag("no", "green", "yes", "purple")),
			stateTimeline("Liveness alerts", "When AgentSilent or AgentZombie fired for the agent.",
				series(fmt.Sprintf(`max by (alertname) (%s)`, livenessAlerts(agent)), "{{alertname}}")).
				withMappings(firing("red")).
				withOverride("AgentSilent", Property{ID: "mappings", Value: []ValueMapping{firing("orange")}}),
		),
		row(5,
			table("Agent info", "What the agent last reported about itself (sentinel_agent_info), per sentinel instance.",
				tableQuery(q(`sentinel_agent_info{%s}`))).
				organize([]string{"Time", "Value", "__name__", "job", "tenant", "agent_id"},
					"status", "Status",
					"platform", "Platform",
					"version", "Version",
					"hostname", "Hostname",
					"pod", "Pod",
					"namespace", "Namespace",
					"node", "Node",
					"container_id", "Container",
					"image", "Image",
					"function", "Function",
					"region", "Region",
					"instance", "Sentinel instance",
				),
		),
	)
}

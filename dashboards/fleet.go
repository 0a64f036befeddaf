package dashboards

import "fmt"

// Fleet is the overview of every agent of the chosen tenants: how many are
// in each state, which are SILENT or ZOMBIE right now, and what reaches
// sentinel (heartbeats, refused registrations, revocations).
func Fleet() Dashboard {
	const tenants = `tenant=~"$tenant"`
	alerting := livenessAlerts(tenants)

	stateCount := func(state, description, color string) Panel {
		p := stat(state, description, "none",
			instant(fmt.Sprintf(`sum(sentinel_agents{%s,state=%q})`, tenants, state), state))
		if color == "" {
			return p
		}
		return p.withThresholds(thresholds("green", at(1, color))).background()
	}

	return dashboard("sentinel-fleet", "Sentinel / Fleet",
		"Every agent sentinel watches: states, SILENT and ZOMBIE agents, heartbeats, refusals and revocations.",
		[]Variable{labelValues("tenant", "tenant", "sentinel_agents", true)},
		row(4,
			stat("Agents", "Agents of the selected tenants that sentinel knows, in any state.", "none",
				instant(fmt.Sprintf(`sum(sentinel_agents{%s})`, tenants), "agents")).
				withThresholds(thresholds("text")),
			stateCount("ACTIVE", "Agents beating on time.", ""),
			stateCount("SILENT", "Agents that missed heartbeat.silent_after heartbeats, as sentinel counts them.", "orange"),
			stateCount("ZOMBIE", "Agents that missed heartbeat.zombie_after heartbeats: presumed dead or unsupervised.", "red"),
			stateCount("STOPPED", "Agents that announced their shutdown; they raise no alert.", "").
				withThresholds(thresholds("blue")),
			stateCount("REVOKED", "Agents revoked by the kill switch; they raise no alert.", "purple"),
		),
		row(8,
			timeseries("Agents by state",
				"sentinel_agents, summed over tenants and sentinel instances.", "none",
				series(fmt.Sprintf(`sum by (state) (sentinel_agents{%s})`, tenants), "{{state}}")).
				stacked().stateColored(),
			timeseries("Firing liveness alerts",
				"AgentSilent and AgentZombie alerts firing in Prometheus, by alert.", "none",
				series(fmt.Sprintf(`count by (alertname) (%s)`, alerting), "{{alertname}}")).
				withOverride("AgentSilent", fixedColor("orange")).
				withOverride("AgentZombie", fixedColor("red")),
		),
		row(8,
			table("SILENT and ZOMBIE agents",
				"Agents whose AgentSilent or AgentZombie alert fires (stopped and revoked agents never do), "+
					"with the missed heartbeats and the last heartbeat any sentinel instance saw. "+
					"Click an agent for its dashboard.",
				tableQuery(fmt.Sprintf(`max by (tenant, agent_id, state) (%s * on (tenant, agent_id) group_left () sentinel:agent_missed_heartbeats)`, alerting)),
				tableQuery(fmt.Sprintf(`1000 * sentinel:agent_last_heartbeat_timestamp_seconds:max{%s} and on (tenant, agent_id) %s`, tenants, alerting)),
				tableQuery(fmt.Sprintf(`max by (tenant, agent_id) (sentinel_agent_heartbeat_interval_seconds{%s}) and on (tenant, agent_id) %s`, tenants, alerting)),
			).
				organize([]string{"Time"},
					"tenant", "Tenant",
					"agent_id", "Agent",
					"state", "State",
					refValue(0), "Missed heartbeats",
					refValue(1), "Last heartbeat",
					refValue(2), "Interval",
				).
				withOverride("State", Property{ID: "mappings", Value: []ValueMapping{stateMapping()}}, cellBackground()).
				withOverride("Last heartbeat", unit("dateTimeAsIso")).
				withOverride("Interval", unit("s")).
				withOverride("Agent", Property{ID: "links", Value: []FieldLink{{
					Title: "Agent dashboard",
					URL:   "/d/sentinel-agent/sentinel-agent?${datasource:queryparam}&var-tenant=${__data.fields.Tenant}&var-agent_id=${__value.raw}&${__url_time_range}",
				}}}).
				sortBy("Missed heartbeats"),
		),
		row(8,
			timeseries("Heartbeats by protocol and result",
				"Heartbeat requests per second, all tenants: accepted, and every reason one was turned away.", "reqps",
				series(`sum by (protocol, result) (rate(sentinel_heartbeats_total[$__rate_interval]))`, "{{protocol}} {{result}}")).
				width(12),
			timeseries("Refused registrations",
				"New agents refused because heartbeat.max_agents is reached. A refused agent is not watched.", "none",
				series(fmt.Sprintf(`sum by (tenant) (increase(sentinel_agents_refused_total{%s}[$__rate_interval]))`, tenants), "{{tenant}}")).
				bars().withThresholds(thresholds("green", at(1, "orange"))),
			timeseries("Revocations",
				"Agents revoked by the kill switch, all tenants, by source: an admin, or an alert through the bridge.", "none",
				series(`sum by (source) (increase(sentinel_revocations_total[$__rate_interval]))`, "{{source}}")).
				bars(),
		),
	)
}

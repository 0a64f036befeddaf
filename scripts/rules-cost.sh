#!/usr/bin/env bash
# Measures what sentinel's liveness rules (group sentinel-agents) cost a real
# Prometheus at a given fleet size, for one or more versions of the rule file
# side by side: each version's group is renamed (its recorded series and
# alerts too) and all are evaluated by one Prometheus over the same data. It
# prints each group's evaluation time and Prometheus' CPU use; on a shared
# machine the wall-clock times follow the load, so compare CPU: run it once
# per version and once with NAME=none (no rules) for the scrape's own cost. The data is a synthetic sentinel
# exposition of AGENTS agents (99% beating, 1% silent) scraped as REPLICAS
# sentinel replicas every 15s; rules are evaluated every 15s.
#
#   scripts/rules-cost.sh [-a AGENTS] [-r REPLICAS] [-s SECONDS] NAME=RULE_FILE...
#
# e.g. git show main:alerts/sentinel.rules.yml >/tmp/main.yml
#      scripts/rules-cost.sh before=/tmp/main.yml after=alerts/sentinel.rules.yml
set -euo pipefail

agents=100000 replicas=1 seconds=300
while getopts a:r:s: o; do
  case $o in
    a) agents=$OPTARG ;; r) replicas=$OPTARG ;; s) seconds=$OPTARG ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "usage: $0 [-a AGENTS] [-r REPLICAS] [-s SECONDS] NAME=RULE_FILE..." >&2; exit 2; }

dir=$(mktemp -d)
# Prometheus may take long to stop in the middle of a slow evaluation.
trap 'kill -KILL $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT

rule_files=""
for v in "$@"; do
  name=${v%%=*} file=${v#*=}
  [ "$file" = none ] && continue
  python3 - "$name" "$file" >"$dir/$name.rules.yml" <<'PY'
import sys, yaml
name, path = sys.argv[1], sys.argv[2]
doc = yaml.safe_load(open(path))
g = next(g for g in doc["groups"] if g["name"] == "sentinel-agents")
g["name"] = "sentinel-agents-" + name
for r in g["rules"]:
    for k in ("record", "expr"):
        if k in r:
            r[k] = r[k].replace("sentinel:", "sentinel_" + name + ":")
    if "alert" in r:
        r["alert"] += "_" + name
    r.pop("annotations", None)
yaml.safe_dump({"groups": [g]}, sys.stdout, sort_keys=False)
PY
  rule_files="$rule_files\"$dir/$name.rules.yml\", "
done

python3 - "$agents" >"$dir/metrics" <<'PY'
import sys, time
n = int(sys.argv[1]); now = int(time.time())
labels = lambda i: f'agent_id="agent-{i:06d}",tenant="tenant-{i % 4}"'
for name in ["last_heartbeat_timestamp_seconds", "heartbeat_interval_seconds",
             "lease_expiry_timestamp_seconds", "zombie_deadline_timestamp_seconds",
             "stopped", "revoked"]:
    print(f"# TYPE sentinel_agent_{name} gauge")
    for i in range(n):
        # 1% silent since an hour ago; the rest beat "just now", far ahead.
        last = now - 3600 if i % 100 == 0 else now + 10**7
        v = {"last_heartbeat_timestamp_seconds": last, "heartbeat_interval_seconds": 60,
             "lease_expiry_timestamp_seconds": last + 300,
             "zombie_deadline_timestamp_seconds": last + 900}.get(name, 0)
        print(f"sentinel_agent_{name}{{{labels(i)}}} {v}")
PY

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port) pport=$(free_port)
(cd "$dir" && exec python3 -m http.server "$port" --bind 127.0.0.1 >/dev/null 2>&1) &
targets="\"127.0.0.1:$port\""
[ "$replicas" -ge 2 ] && targets="$targets, \"localhost:$port\""
cat >"$dir/prometheus.yml" <<YML
global: {scrape_interval: 15s, evaluation_interval: 15s, scrape_timeout: 14s}
rule_files: [${rule_files%, }]
scrape_configs:
  - job_name: sentinel
    metrics_path: /metrics
    static_configs: [{targets: [$targets]}]
  - job_name: prometheus
    static_configs: [{targets: ["127.0.0.1:$pport"]}]
YML
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
  --web.listen-address="127.0.0.1:$pport" --log.level=warn >"$dir/prometheus.log" 2>&1 &
sleep "$seconds"

q() { curl -fsS "http://127.0.0.1:$pport/api/v1/query" --data-urlencode "query=$1" |
  python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print("%.3f" % float(r[0]["value"][1]) if r else "n/a")'; }
echo "agents=$agents replicas=$replicas run=${seconds}s load=$(cut -d' ' -f1-3 /proc/loadavg)"
echo "samples scraped per replica: $(q 'max(scrape_samples_scraped{job="sentinel"})')"
echo "Prometheus resident memory (MB): $(q 'process_resident_memory_bytes{job="prometheus"} / 1e6')"
echo "Prometheus CPU (cores), mean of the last 3m: $(q 'rate(process_cpu_seconds_total{job="prometheus"}[3m])')"
echo "Prometheus CPU seconds in total: $(q 'process_cpu_seconds_total{job="prometheus"}')"
echo "rule group evaluations in total: $(q 'sum(prometheus_rule_group_iterations_total) - sum(prometheus_rule_group_iterations_missed_total) or vector(0)')"
for v in "$@"; do
  name=${v%%=*}
  [ "${v#*=}" = none ] && continue
  group="rule_group=~\".*;sentinel-agents-$name\""
  echo "$name: group evaluation (s) mean $(q "avg_over_time(prometheus_rule_group_last_duration_seconds{$group}[3m])")," \
    "max $(q "max_over_time(prometheus_rule_group_last_duration_seconds{$group}[3m])")," \
    "evaluations $(q "sum(prometheus_rule_group_iterations_total{$group})")," \
    "missed $(q "sum(prometheus_rule_group_iterations_missed_total{$group})")"
done

{{/*
The objects' name: fullnameOverride, else the release name, suffixed with
"-sentinel" unless it already says sentinel.
*/}}
{{- define "sentinel.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains "sentinel" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-sentinel" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
Selector labels. app.kubernetes.io/name is always "sentinel": the
ServiceMonitor takes the Prometheus job name from it, and the alerting
rules watch up{job="sentinel"}.
*/}}
{{- define "sentinel.selectorLabels" -}}
app.kubernetes.io/name: sentinel
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sentinel.labels" -}}
{{ include "sentinel.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Where the referenced Secrets are mounted, one directory each. */}}
{{- define "sentinel.secretsDir" -}}/etc/sentinel/secrets{{- end -}}

{{/* The file a secret reference {secret, key} is read from in the pod. */}}
{{- define "sentinel.secretFile" -}}
{{- printf "%s/%s/%s" (include "sentinel.secretsDir" .root) .ref.secret .ref.key -}}
{{- end -}}

{{/*
Every secret reference of the values, as a YAML list of {secret, key}: the
Secrets the pod mounts, and what the configuration reads from them.
*/}}
{{- define "sentinel.secretRefs" -}}
{{- $refs := list -}}
{{- range .Values.adminTokens }}{{ $refs = append $refs . }}{{ end -}}
{{- range .Values.tenants -}}
{{- range .apiKeys }}{{ $refs = append $refs . }}{{ end -}}
{{- range .adminTokens }}{{ $refs = append $refs . }}{{ end -}}
{{- if .webhook }}{{ range .webhook.secrets }}{{ $refs = append $refs . }}{{ end }}{{ end -}}
{{- end -}}
{{- with .Values.bridge.bearerToken }}{{ $refs = append $refs . }}{{ end -}}
{{- with .Values.metrics.bearerToken }}{{ $refs = append $refs . }}{{ end -}}
{{- if .Values.storage.postgres.enabled }}{{ $refs = append $refs .Values.storage.postgres.dsn }}{{ end -}}
{{- toYaml $refs -}}
{{- end -}}

{{/* The names of the referenced Secrets, sorted, without repeats. */}}
{{- define "sentinel.secretNames" -}}
{{- $names := dict -}}
{{- range (include "sentinel.secretRefs" . | fromYamlArray) }}{{ $_ := set $names .secret "" }}{{ end -}}
{{- toYaml (keys $names | sortAlpha) -}}
{{- end -}}

{{/* The workload kind: a StatefulSet for the embedded store, else a Deployment. */}}
{{- define "sentinel.replicated" -}}
{{- if .Values.storage.postgres.enabled }}true{{ end -}}
{{- end -}}

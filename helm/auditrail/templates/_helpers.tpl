{{/*
Names, labels and the values the chart derives from `config`.

Every helper here takes auditrail's own context: the chart's root context when it renders its
own objects, or `.Subcharts.auditrail` when an application's chart includes the sidecar
templates (see _sidecar.tpl). Names never use `.Chart.Name`, so they come out the same in both.
*/}}

{{/* The chart's name, cut to 63 characters (a DNS label). */}}
{{- define "auditrail.name" -}}
{{- default "auditrail" .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* `<release>-auditrail`, or the release name alone when it already contains the chart's name; 63 characters at most. */}}
{{- define "auditrail.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "auditrail.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* A name derived from the fullname with a suffix, still 63 characters at most. */}}
{{- define "auditrail.suffixed" -}}
{{- $full := include "auditrail.fullname" .ctx }}
{{- printf "%s-%s" ($full | trunc (int (sub 62 (len .suffix)))) .suffix | trimSuffix "-" }}
{{- end }}

{{/* `helm.sh/chart`: name and version, 63 characters at most. */}}
{{- define "auditrail.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object of this chart carries. */}}
{{- define "auditrail.labels" -}}
helm.sh/chart: {{ include "auditrail.chart" . }}
{{ include "auditrail.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: auditrail
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select this release's objects. */}}
{{- define "auditrail.selectorLabels" -}}
app.kubernetes.io/name: {{ include "auditrail.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The label that marks a pod as carrying this release's sidecar (the Service and PodMonitor select on it). */}}
{{- define "auditrail.sidecarLabel" -}}
auditrail/sidecar: {{ include "auditrail.fullname" . }}
{{- end }}

{{/* The labels that select the pods carrying the sidecar: `service.selector`, or the sidecar label. */}}
{{- define "auditrail.podSelector" -}}
{{- if .Values.service.selector }}
{{- toYaml .Values.service.selector }}
{{- else }}
{{- include "auditrail.sidecarLabel" . }}
{{- end }}
{{- end }}

{{/* "true" when the standalone objects are rendered: `mode: standalone`, or the demo (which needs them). */}}
{{- define "auditrail.standalone" -}}
{{- if or (eq .Values.mode "standalone") .Values.demo.enabled }}true{{ end }}
{{- end }}

{{/* The ConfigMap holding auditrail.yaml: the user's (`existingConfigMap`) or the chart's. */}}
{{- define "auditrail.configMapName" -}}
{{- .Values.existingConfigMap | default (include "auditrail.fullname" .) }}
{{- end }}

{{/* The sidecar's resources: `resources`, or with `resourcesPreset: guaranteed` requests equal to its limits (Guaranteed QoS needs that of every container). */}}
{{- define "auditrail.resources" -}}
{{- $res := .Values.resources | default dict }}
{{- if eq (.Values.resourcesPreset | default "") "guaranteed" }}
{{- $limits := $res.limits | default dict }}
{{- if not (and $limits.cpu $limits.memory) }}
{{- fail "auditrail: resourcesPreset guaranteed sets the requests equal to resources.limits, which needs both limits.cpu and limits.memory" }}
{{- end }}
{{- $res = dict "requests" (pick $limits "cpu" "memory") "limits" $limits }}
{{- end }}
{{- toYaml $res }}
{{- end }}

{{/* The job the PrometheusRule's alerts and the Grafana dashboard select: the enabled monitor's `job` (the PodMonitor's when none or both are enabled; both must then agree). */}}
{{- define "auditrail.monitorJob" -}}
{{- $pm := .Values.podMonitor }}
{{- $sm := .Values.serviceMonitor }}
{{- $job := $pm.job }}
{{- if and $sm.enabled (not $pm.enabled) }}
{{- $job = $sm.job }}
{{- else if and $sm.enabled $pm.enabled (ne $sm.job $pm.job) }}
{{- fail (printf "auditrail: the PrometheusRule and the dashboard select one job, but podMonitor.job %q and serviceMonitor.job %q differ" $pm.job $sm.job) }}
{{- end }}
{{- if not $job }}
{{- fail "auditrail: prometheusRule and grafanaDashboard need the monitors' `job` (they select job=\"<job>\"); with `job: \"\"` they would never fire" }}
{{- end }}
{{- $job }}
{{- end }}

{{/* The ServiceAccount the pods run as, and the RoleBinding binds. */}}
{{- define "auditrail.serviceAccountName" -}}
{{- if and .Values.serviceAccount.create (include "auditrail.standalone" .) }}
{{- default (include "auditrail.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The sidecar image: repository, then the digest or the tag (default: appVersion). */}}
{{- define "auditrail.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The config file, exactly as the ConfigMap holds it: `config`, with the outputs replaced by stdout for the demo (`demo.output: stdout`), its `{{ }}` expressions rendered (tpl, with this release's context). */}}
{{- define "auditrail.configYaml" -}}
{{- $text := toYaml .Values.config }}
{{- if include "auditrail.demoStdout" . }}
{{- $text = toYaml (merge (dict "outputs" (dict "stdout" dict)) (omit .Values.config "outputs")) }}
{{- end }}
{{- if contains "{{" $text }}
{{- tpl $text . }}
{{- else }}
{{- $text }}
{{- end }}
{{- end }}

{{/* "true" when the demo ships to stdout instead of `config.outputs`, so that it needs no Kafka. */}}
{{- define "auditrail.demoStdout" -}}
{{- if and .Values.demo.enabled (eq (.Values.demo.output | default "stdout") "stdout") }}true{{ end }}
{{- end }}

{{/* The outputs of the config file, as a map. */}}
{{- define "auditrail.outputs" -}}
{{- if include "auditrail.demoStdout" . }}
{{- toYaml (dict "stdout" dict) }}
{{- else }}
{{- toYaml (.Values.config.outputs | default dict) }}
{{- end }}
{{- end }}

{{/* `source.kind` of the config: file (auditrail's default) or kubernetes. */}}
{{- define "auditrail.sourceKind" -}}
{{- (.Values.config.source | default dict).kind | default "file" }}
{{- end }}

{{/* `enrich.kubernetes` of the config; without it auditrail's own default, `auto` (which asks the API, so the chart grants it). */}}
{{- define "auditrail.enrichMode" -}}
{{- (.Values.config.enrich | default dict).kubernetes | default "auto" }}
{{- end }}

{{/* "true" when the config reads the pod through the API (get/watch on pods). */}}
{{- define "auditrail.needsPods" -}}
{{- if has (include "auditrail.enrichMode" .) (list "api" "auto") }}true{{ end }}
{{- end }}

{{/* "true" when the config follows the container's log through the API (get on pods/log). */}}
{{- define "auditrail.needsPodLog" -}}
{{- if eq (include "auditrail.sourceKind" .) "kubernetes" }}true{{ end }}
{{- end }}

{{/* "true" when the sidecar talks to the Kubernetes API at all (so it needs a token and RBAC). */}}
{{- define "auditrail.needsApi" -}}
{{- if or (include "auditrail.needsPods" .) (include "auditrail.needsPodLog" .) }}true{{ end }}
{{- end }}

{{/* Where the checkpoint volume is mounted: `source.checkpoint_dir`. */}}
{{- define "auditrail.checkpointDir" -}}
{{- (.Values.config.source | default dict).checkpoint_dir | default "/var/lib/auditrail" }}
{{- end }}

{{/* Where the Downward API volume is mounted: `enrich.podinfo_dir`. */}}
{{- define "auditrail.podinfoDir" -}}
{{- (.Values.config.enrich | default dict).podinfo_dir | default "/etc/podinfo" }}
{{- end }}

{{/* The metrics port: the port of `metrics.listen` (default 0.0.0.0:9464). */}}
{{- define "auditrail.metricsPort" -}}
{{- $listen := (.Values.config.metrics | default dict).listen | default "0.0.0.0:9464" }}
{{- $port := regexFind "[0-9]+$" (toString $listen) }}
{{- if not $port }}
{{- fail (printf "config.metrics.listen %q must end with :<port>" $listen) }}
{{- end }}
{{- $port }}
{{- end }}

{{/* A humantime duration as auditrail reads it (`30s`, `1m 30s`, `500ms`) in whole seconds, rounded up. */}}
{{- define "auditrail.seconds" -}}
{{- $ms := 0 }}
{{- range splitList " " (toString .) }}
{{- if . }}
{{- $n := regexFind "^[0-9]+" . }}
{{- $unit := trimPrefix $n . }}
{{- $factor := get (dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000) $unit }}
{{- if or (not $n) (not $factor) }}
{{- fail (printf "cannot read the duration %q: write it as e.g. 30s, 1m 30s or 500ms" .) }}
{{- end }}
{{- $ms = add $ms (mul (atoi $n) $factor) }}
{{- end }}
{{- end }}
{{- div (add $ms 999) 1000 }}
{{- end }}

{{/* The grace period the drain on SIGTERM needs: `source.drain_timeout` (10s) plus the longest output `drain_timeout` (kafka 30s, others 10s) plus 5 s for the checkpoint's save and the kubelet. */}}
{{- define "auditrail.requiredGracePeriod" -}}
{{- $source := (.Values.config.source | default dict).drain_timeout | default "10s" }}
{{- $longest := 0 }}
{{- range $name, $out := (include "auditrail.outputs" . | fromYaml) }}
{{- if $out }}
{{- $d := $out.drain_timeout | default (ternary "30s" "10s" (eq $name "kafka")) }}
{{- $longest = max $longest (int (include "auditrail.seconds" $d)) }}
{{- end }}
{{- end }}
{{- add (include "auditrail.seconds" $source) $longest 5 }}
{{- end }}

{{/* `terminationGracePeriodSeconds`, checked: rendering fails when the drain does not fit in it. */}}
{{- define "auditrail.gracePeriod" -}}
{{- $grace := int .Values.terminationGracePeriodSeconds }}
{{- $needs := int (include "auditrail.requiredGracePeriod" .) }}
{{- if lt $grace $needs }}
{{- fail (printf "terminationGracePeriodSeconds %d is shorter than auditrail's drain on SIGTERM: source.drain_timeout plus the longest output drain_timeout plus 5 s = %d s. Raise terminationGracePeriodSeconds (and the pod's, to include the application's own shutdown) or lower the drain_timeout values" $grace $needs) }}
{{- end }}
{{- $grace }}
{{- end }}

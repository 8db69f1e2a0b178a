{{/*
The sidecar library: what an application's chart includes to add auditrail to its own pods.
The application's chart lists this chart under `dependencies` as `auditrail` (which renders
the ConfigMap and the RBAC), then adds four lines to its pod template (README.md):

  spec:
    template:
      metadata:
        annotations:
          {{- include "auditrail.sidecar.podAnnotations" . | nindent 8 }}   # checksum/config
      spec:
        {{- include "auditrail.sidecar.terminationGracePeriodSeconds" . | nindent 8 }}
        initContainers:
          {{- include "auditrail.sidecar.initContainer" . | nindent 10 }}
        containers:
          - name: app
            ...
        volumes:
          {{- include "auditrail.sidecar.volumes" . | nindent 10 }}

`auditrail.sidecar.initContainer` is the native sidecar (`nativeSidecar: true`, the default);
with `nativeSidecar: false` include `auditrail.sidecar.container` under containers instead.
Each fails rendering in the other mode, so that a pod never goes without its sidecar.

Optional: `auditrail.sidecar.podLabels` (what the Service and PodMonitor select on),
`auditrail.sidecar.serviceAccount` (serviceAccountName, and automountServiceAccountToken:
false: the sidecar mounts its own token, the application's containers get none).

Each template is called with the application chart's root context and finds auditrail's values
and chart in `.Subcharts.auditrail` (keep the dependency's name, no alias). Called from this
chart's own templates, it uses the root context.
*/}}

{{/* The container, as a list item for `containers` (`nativeSidecar: false`). */}}
{{- define "auditrail.sidecar.container" -}}
{{- include "auditrail.checkContext" (list "auditrail.sidecar.container" .) }}
{{- $c := . }}
{{- with .Subcharts }}{{ with .auditrail }}{{ $c = . }}{{ end }}{{ end -}}
{{- if $c.Values.enabled }}
{{- if $c.Values.nativeSidecar }}
{{- fail "auditrail: nativeSidecar is true (the default): include \"auditrail.sidecar.initContainer\" under initContainers instead of \"auditrail.sidecar.container\" under containers, or set auditrail.nativeSidecar: false" }}
{{- end }}
{{- include "auditrail.containerSpec" (dict "ctx" $c "native" false) }}
{{- end }}
{{- end }}

{{/* The container as a native sidecar, as a list item for `initContainers` (Kubernetes 1.29+, `nativeSidecar: true`). */}}
{{- define "auditrail.sidecar.initContainer" -}}
{{- include "auditrail.checkContext" (list "auditrail.sidecar.initContainer" .) }}
{{- $c := . }}
{{- with .Subcharts }}{{ with .auditrail }}{{ $c = . }}{{ end }}{{ end -}}
{{- if $c.Values.enabled }}
{{- if not $c.Values.nativeSidecar }}
{{- fail "auditrail: nativeSidecar is false: include \"auditrail.sidecar.container\" under containers instead of \"auditrail.sidecar.initContainer\" under initContainers" }}
{{- end }}
{{- include "auditrail.containerSpec" (dict "ctx" $c "native" true) }}
{{- end }}
{{- end }}

{{/* `terminationGracePeriodSeconds: N` for the pod spec; rendering fails when N is shorter than the drain on SIGTERM needs. */}}
{{- define "auditrail.sidecar.terminationGracePeriodSeconds" -}}
{{- include "auditrail.checkContext" (list "auditrail.sidecar.terminationGracePeriodSeconds" .) }}
{{- $c := . }}
{{- with .Subcharts }}{{ with .auditrail }}{{ $c = . }}{{ end }}{{ end -}}
{{- if $c.Values.enabled }}
terminationGracePeriodSeconds: {{ include "auditrail.gracePeriod" $c }}
{{- end }}
{{- end }}

{{/* The volumes, as list items for `volumes`. */}}
{{- define "auditrail.sidecar.volumes" -}}
{{- include "auditrail.checkContext" (list "auditrail.sidecar.volumes" .) }}
{{- $c := . }}
{{- with .Subcharts }}{{ with .auditrail }}{{ $c = . }}{{ end }}{{ end -}}
{{- if $c.Values.enabled }}
{{- include "auditrail.volumes" $c }}
{{- end }}
{{- end }}

{{/* The pod labels, as map entries for the pod template's `labels`. */}}
{{- define "auditrail.sidecar.podLabels" -}}
{{- include "auditrail.checkContext" (list "auditrail.sidecar.podLabels" .) }}
{{- $c := . }}
{{- with .Subcharts }}{{ with .auditrail }}{{ $c = . }}{{ end }}{{ end -}}
{{- if $c.Values.enabled }}
{{- include "auditrail.sidecarLabel" $c }}
{{- end }}
{{- end }}

{{/* The pod annotations, as map entries for the pod template's `annotations`: checksum/config (unless hotReload), prometheus.io/* (when enabled). */}}
{{- define "auditrail.sidecar.podAnnotations" -}}
{{- include "auditrail.checkContext" (list "auditrail.sidecar.podAnnotations" .) }}
{{- $c := . }}
{{- with .Subcharts }}{{ with .auditrail }}{{ $c = . }}{{ end }}{{ end -}}
{{- if $c.Values.enabled }}
{{- include "auditrail.podAnnotations" $c }}
{{- end }}
{{- end }}

{{/* serviceAccountName and automountServiceAccountToken, as entries of the pod spec. */}}
{{- define "auditrail.sidecar.serviceAccount" -}}
{{- include "auditrail.checkContext" (list "auditrail.sidecar.serviceAccount" .) }}
{{- $c := . }}
{{- with .Subcharts }}{{ with .auditrail }}{{ $c = . }}{{ end }}{{ end -}}
{{- if $c.Values.enabled }}
serviceAccountName: {{ include "auditrail.serviceAccountName" $c }}
# The sidecar mounts its own token when it needs one; the application's containers get none.
automountServiceAccountToken: false
{{- end }}
{{- end }}

{{/* Fails rendering unless `.` is a chart's root context: a line pasted inside a `with` or `range` block (helm create's `with .Values.volumes`) gets the block's value instead, and such a block is skipped altogether when its value is empty. */}}
{{- define "auditrail.checkContext" -}}
{{- $name := index . 0 }}
{{- $ctx := index . 1 }}
{{- if not (and (kindIs "map" $ctx) (hasKey $ctx "Values") (hasKey $ctx "Release")) }}
{{- fail (printf "auditrail: include %q got a %s, not the chart's context: inside a `with` or `range` block `.` is the block's value (and the block is skipped when that value is empty, leaving the sidecar without its volumes). Move the line out of the block, or pass the root context: include %q `$` (helm/auditrail/README.md: \"In a chart made by helm create\")" $name (kindOf $ctx) $name) }}
{{- end }}
{{- end }}

{{/* --- the definitions behind them, each taking auditrail's context --- */}}

{{- define "auditrail.podAnnotations" -}}
{{- $lines := list }}
{{- if and (not .Values.hotReload) .Values.existingConfigMap }}
{{- /* The user's ConfigMap: its name, and its data when helm can read it (install, upgrade; `helm template` cannot). */}}
{{- $theirs := lookup "v1" "ConfigMap" .Release.Namespace .Values.existingConfigMap | default dict }}
{{- $lines = append $lines (printf "checksum/config: %s" (printf "%s\n%s" .Values.existingConfigMap (toYaml ($theirs.data | default dict)) | sha256sum)) }}
{{- else if not .Values.hotReload }}
{{- $lines = append $lines (printf "checksum/config: %s" (include "auditrail.configYaml" . | sha256sum)) }}
{{- else }}
{{- /* auditrail reloads the per-record stages itself; every other section needs a restart. */}}
{{- $restart := omit .Values.config "audit" "types" "retention" }}
{{- $lines = append $lines (printf "checksum/config-restart: %s" (toYaml $restart | sha256sum)) }}
{{- end }}
{{- if .Values.prometheusAnnotations.enabled }}
{{- $lines = append $lines "prometheus.io/scrape: \"true\"" }}
{{- $lines = append $lines (printf "prometheus.io/port: %q" (include "auditrail.metricsPort" .)) }}
{{- $lines = append $lines "prometheus.io/path: /metrics" }}
{{- end }}
{{- join "\n" $lines }}
{{- end }}

{{- define "auditrail.containerSpec" -}}
{{- $c := .ctx }}
{{- $v := $c.Values -}}
- name: {{ $v.containerName }}
  image: {{ include "auditrail.image" $c }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if .native }}
  restartPolicy: Always
  {{- end }}
  args:
    - run
    - --config
    - /etc/auditrail/auditrail.yaml
  env:
    # The Downward API: who this pod is (enrichment, and the log directory's subPathExpr).
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    - name: POD_UID
      valueFrom:
        fieldRef:
          fieldPath: metadata.uid
    - name: NODE_NAME
      valueFrom:
        fieldRef:
          fieldPath: spec.nodeName
    - name: POD_IP
      valueFrom:
        fieldRef:
          fieldPath: status.podIP
    {{- if and $v.resources $v.resources.limits $v.resources.limits.memory }}
    # The memory budget defaults to half the container's memory limit (memory.budget_bytes).
    - name: AUDITRAIL_MEMORY_LIMIT
      valueFrom:
        resourceFieldRef:
          resource: limits.memory
    {{- end }}
    - name: RUST_LOG
      value: {{ $v.logLevel | quote }}
    {{- with $v.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $v.envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    - name: {{ $v.metricsPort.name }}
      containerPort: {{ include "auditrail.metricsPort" $c }}
      protocol: TCP
  {{- with $v.probes.liveness }}
  {{- if .enabled }}
  livenessProbe:
    {{- include "auditrail.probe" (dict "probe" . "path" "/healthz" "port" $v.metricsPort.name) | nindent 4 }}
  {{- end }}
  {{- end }}
  {{- with $v.probes.readiness }}
  {{- if .enabled }}
  # started: the sidecar's own start only (/startupz); shipping: not ready while it cannot ship (/readyz).
  readinessProbe:
    {{- include "auditrail.probe" (dict "probe" . "path" (eq (.mode | default "started") "shipping" | ternary "/readyz" "/startupz") "port" $v.metricsPort.name) | nindent 4 }}
  {{- end }}
  {{- end }}
  {{- with $v.probes.startup }}
  {{- if .enabled }}
  # Holds the other probes back until the sidecar serves (200 on /startupz).
  startupProbe:
    {{- include "auditrail.probe" (dict "probe" . "path" "/startupz" "port" $v.metricsPort.name) | nindent 4 }}
  {{- end }}
  {{- end }}
  {{- with $v.lifecycle }}
  lifecycle:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with (include "auditrail.resources" $c | fromYaml) }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    # The ConfigMap as a directory (not subPath), so that an update reaches the file.
    - name: auditrail-config
      mountPath: /etc/auditrail
      readOnly: true
    {{- if $v.kafka.existingSecret }}
    - name: auditrail-kafka
      mountPath: /etc/auditrail/secrets
      readOnly: true
    {{- end }}
    - name: auditrail-checkpoints
      mountPath: {{ include "auditrail.checkpointDir" $c }}
      {{- if ne $v.checkpoints.type "emptyDir" }}
      subPathExpr: $(POD_NAMESPACE)_$(POD_NAME)
      {{- end }}
    - name: auditrail-podinfo
      mountPath: {{ include "auditrail.podinfoDir" $c }}
      readOnly: true
    {{- if include "auditrail.needsApi" $c }}
    # The API token, in this container alone (the pod mounts none: automountServiceAccountToken false).
    - name: auditrail-token
      mountPath: /var/run/secrets/kubernetes.io/serviceaccount
      readOnly: true
    {{- end }}
    {{- if eq (include "auditrail.sourceKind" $c) "file" }}
    {{- if eq $v.logs.scope "pod" }}
    # Only this pod's own directory of the node's pod logs (the kubelet names it
    # <namespace>_<pod>_<uid>): the sidecar sees its own pod's logs and no other's.
    - name: auditrail-logs
      mountPath: {{ $v.logs.mountPath }}
      subPathExpr: $(POD_NAMESPACE)_$(POD_NAME)_$(POD_UID)
      readOnly: true
    {{- else }}
    - name: auditrail-logs
      mountPath: {{ $v.logs.hostPath }}
      readOnly: true
    {{- end }}
    {{- end }}
    {{- with $v.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{- /* A probe: the value's Probe fields (all but `enabled` and `mode`), with GET `path` on `port` unless the value brings its own handler. */}}
{{- define "auditrail.probe" -}}
{{- $p := omit .probe "enabled" "mode" }}
{{- if not (or $p.httpGet $p.exec $p.tcpSocket $p.grpc) }}
{{- $_ := set $p "httpGet" (dict "path" .path "port" .port) }}
{{- end }}
{{- toYaml $p }}
{{- end }}

{{- define "auditrail.volumes" -}}
- name: auditrail-config
  configMap:
    name: {{ include "auditrail.configMapName" . }}
{{- if .Values.kafka.existingSecret }}
- name: auditrail-kafka
  secret:
    secretName: {{ .Values.kafka.existingSecret }}
    # Readable by the sidecar whatever the pod's fsGroup; no other container mounts it.
    defaultMode: 0444
{{- end }}
- name: auditrail-checkpoints
{{- if eq .Values.checkpoints.type "emptyDir" }}
  emptyDir:
    sizeLimit: {{ .Values.checkpoints.sizeLimit }}
{{- else if eq .Values.checkpoints.type "hostPath" }}
  hostPath:
    path: {{ .Values.checkpoints.hostPath }}
    type: DirectoryOrCreate
{{- else if eq .Values.checkpoints.type "persistentVolumeClaim" }}
  persistentVolumeClaim:
    claimName: {{ required "checkpoints.claimName is required for checkpoints.type persistentVolumeClaim" .Values.checkpoints.claimName }}
{{- else }}
{{- fail (printf "checkpoints.type %q is not emptyDir, hostPath or persistentVolumeClaim" .Values.checkpoints.type) }}
{{- end }}
- name: auditrail-podinfo
  downwardAPI:
    items:
      - path: labels
        fieldRef:
          fieldPath: metadata.labels
      - path: annotations
        fieldRef:
          fieldPath: metadata.annotations
{{- if include "auditrail.needsApi" . }}
# What a kubelet's automount would give, for the sidecar alone.
- name: auditrail-token
  projected:
    defaultMode: 0444
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3607
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                fieldPath: metadata.namespace
{{- end }}
{{- if eq (include "auditrail.sourceKind" .) "file" }}
- name: auditrail-logs
  hostPath:
    path: {{ .Values.logs.hostPath }}
    type: Directory
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

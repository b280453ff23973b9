{{- define "mmgate.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mmgate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mmgate.labels" -}}
app.kubernetes.io/name: {{ include "mmgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "mmgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mmgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mmgate.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/*
mmgate.toml: `config` with where mmgate listens, each key's file, and the
shared limiter. Helm reads numbers in values as floats: written back as
integers (mmgate's numbers are all whole).
*/}}
{{- define "mmgate.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- if not $config.clients -}}
{{- fail "config.clients: set at least one client (mmgate token NAME mints a token and its hash)" -}}
{{- end -}}
{{- $server := default dict $config.server -}}
{{- $_ := set $server "listen" (printf "0.0.0.0:%v" .Values.service.port) -}}
{{- $_ := set $server "admin_listen" (printf "0.0.0.0:%v" .Values.service.adminPort) -}}
{{- $_ := set $config "server" $server -}}
{{- range $name, $key := $config.keys -}}
{{- $_ := set $key "file" (printf "/run/secrets/mmgate/%s" $name) -}}
{{- $_ := unset $key "env" -}}
{{- end -}}
{{- if .Values.redis.enabled -}}
{{- $limits := default dict $config.limits -}}
{{- $_ := set $limits "redis" (printf "redis://%s-redis:6379" (include "mmgate.fullname" .)) -}}
{{- $_ := set $config "limits" $limits -}}
{{- end -}}
{{- regexReplaceAll "(?m)= (-?[0-9]+)\\.0$" ($config | toToml) "= ${1}" -}}
{{- end -}}

{{/*
The mmgate container, for a pod of your own (sidecar): include it from your
chart with this chart as a dependency, e.g.
  containers:
    - name: app
      ...
    {{- include "mmgate.sidecarContainer" (dict "image" "registry.example.com/mmgate:0.1.0") | nindent 4 }}
with volumes `mmgate-config` (a ConfigMap holding mmgate.toml) and
`mmgate-keys` (the keys Secret). See README, "As a Kubernetes sidecar".
*/}}
{{- define "mmgate.sidecarContainer" -}}
- name: mmgate
  image: {{ .image }}
  args: ["--config", "/etc/mmgate/mmgate.toml"]
  ports:
    - { name: mmgate-admin, containerPort: 9090 }
  livenessProbe:
    httpGet: { path: /healthz, port: mmgate-admin }
  readinessProbe:
    httpGet: { path: /readyz, port: mmgate-admin }
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    runAsNonRoot: true
    capabilities: { drop: [ALL] }
  volumeMounts:
    - { name: mmgate-config, mountPath: /etc/mmgate, readOnly: true }
    - { name: mmgate-keys, mountPath: /run/secrets/mmgate, readOnly: true }
{{- end -}}

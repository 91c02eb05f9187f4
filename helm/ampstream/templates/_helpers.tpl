{{/* Chart name, overridable. */}}
{{- define "ampstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name: release-chart, or the release name when it already contains the chart name. */}}
{{- define "ampstream.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ampstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Stable labels only: a Deployment selector cannot change after install. */}}
{{- define "ampstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ampstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of the `helm test` pod. Its app.kubernetes.io/name differs from the workload's, so the
NetworkPolicy, the Service and the PodDisruptionBudget (all selecting selectorLabels) leave it
alone: the policy's egress rules (DNS, brokers, 443) would otherwise block its request to the
admin port.
*/}}
{{- define "ampstream.testSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-test" (include "ampstream.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
{{- end }}

{{/* The kind of the workload: Deployment or StatefulSet (values: workload). */}}
{{- define "ampstream.workloadKind" -}}
{{- if eq .Values.workload "statefulset" }}StatefulSet{{ else }}Deployment{{ end }}
{{- end }}

{{- define "ampstream.labels" -}}
helm.sh/chart: {{ include "ampstream.chart" . }}
{{ include "ampstream.selectorLabels" . }}
app.kubernetes.io/version: {{ include "ampstream.imageTag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: forwarder
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
metadata.annotations (commonAnnotations + .extra), indented for metadata and starting with a
newline; nothing at all when there are none. Use as: metadata: ... {{- include "ampstream.annotations" (dict "root" .) }}
*/}}
{{- define "ampstream.annotations" -}}
{{- $ann := merge (deepCopy (.extra | default dict)) (deepCopy (.root.Values.commonAnnotations | default dict)) }}
{{- with $ann }}
{{ printf "annotations:\n%s" (toYaml . | indent 2) | indent 2 }}
{{- end }}
{{- end }}

{{- define "ampstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ampstream.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ampstream.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "ampstream.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "ampstream.imageTag" .) }}
{{- end }}
{{- end }}

{{/* Whether Kafka SASL is configured (config.kafka.sasl.mechanism other than none). */}}
{{- define "ampstream.saslEnabled" -}}
{{- $mech := dig "kafka" "sasl" "mechanism" "none" .Values.config | toString }}
{{- if and $mech (ne $mech "none") }}true{{ end }}
{{- end }}

{{/* Name of the chart-created Secret. */}}
{{- define "ampstream.secretName" -}}
{{- include "ampstream.fullname" . }}
{{- end }}

{{/*
name/key of one credential: the user's Secret and key when .existing is set, else the
chart-created Secret and its fixed key .own. Args: root, existing, key, own.
*/}}
{{- define "ampstream.secretKeyRef" -}}
{{- if .existing -}}
name: {{ .existing }}
key: {{ .key }}
{{- else -}}
name: {{ include "ampstream.secretName" .root }}
key: {{ .own }}
{{- end }}
{{- end }}

{{- define "ampstream.apiKeyRef" -}}
{{- include "ampstream.secretKeyRef" (dict "root" . "existing" .Values.amplitude.existingSecret "key" .Values.amplitude.existingSecretKey "own" "amplitude-api-key") }}
{{- end }}

{{- define "ampstream.saslUsernameRef" -}}
{{- include "ampstream.secretKeyRef" (dict "root" . "existing" .Values.kafkaSasl.existingSecret "key" .Values.kafkaSasl.usernameKey "own" "kafka-sasl-username") }}
{{- end }}

{{- define "ampstream.saslPasswordRef" -}}
{{- include "ampstream.secretKeyRef" (dict "root" . "existing" .Values.kafkaSasl.existingSecret "key" .Values.kafkaSasl.passwordKey "own" "kafka-sasl-password") }}
{{- end }}

{{/* Whether the chart must create a Secret: some credential is not in an existing Secret. */}}
{{- define "ampstream.createSecret" -}}
{{- if or (not .Values.amplitude.existingSecret) (and (include "ampstream.saslEnabled" .) (not .Values.kafkaSasl.existingSecret)) }}true{{ end }}
{{- end }}

{{/*
The config file: .Values.config plus the keys the chart owns. Fails on secrets and chart-owned
keys so they cannot silently end up in a ConfigMap or contradict the pod spec (the schema
refuses them too, but schema validation can be skipped).
*/}}
{{- define "ampstream.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $amp := get $cfg "amplitude" | default dict }}
{{- if hasKey $amp "api_key" }}
{{- fail "config.amplitude.api_key must not be set: it would be stored in a ConfigMap. Use amplitude.existingSecret (or amplitude.apiKey)." }}
{{- end }}
{{- $sasl := dig "kafka" "sasl" dict $cfg }}
{{- if or (hasKey $sasl "username") (hasKey $sasl "password") }}
{{- fail "config.kafka.sasl.username/password must not be set: they would be stored in a ConfigMap. Use kafkaSasl.existingSecret (or kafkaSasl.username/password)." }}
{{- end }}
{{- if hasKey (get $cfg "kafka" | default dict) "group_instance_id" }}
{{- fail "config.kafka.group_instance_id must not be set: one id shared by every replica fences all but one. Use workload: statefulset, which sets it to each pod's name." }}
{{- end }}
{{- if hasKey $cfg "admin" }}
{{- fail "config.admin is set by the chart from admin.port; remove it." }}
{{- end }}
{{- if dig "shutdown" "drain_timeout" "" $cfg }}
{{- fail "config.shutdown.drain_timeout is set by the chart from shutdown.drainTimeoutSeconds; remove it." }}
{{- end }}
{{- $_ := set $cfg "admin" (dict "addr" (printf ":%d" (int .Values.admin.port))) }}
{{- $shutdown := get $cfg "shutdown" | default dict }}
{{- $_ := set $shutdown "drain_timeout" (printf "%ds" (int .Values.shutdown.drainTimeoutSeconds)) }}
{{- $_ := set $cfg "shutdown" $shutdown }}
{{- toYaml $cfg }}
{{- end }}

{{/* terminationGracePeriodSeconds: drain timeout plus margin. */}}
{{- define "ampstream.gracePeriod" -}}
{{- add (int .Values.shutdown.drainTimeoutSeconds) (int .Values.shutdown.gracePeriodMarginSeconds) }}
{{- end }}

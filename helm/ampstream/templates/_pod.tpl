{{/*
Checks shared by both workload kinds; renders nothing.
*/}}
{{- define "ampstream.workloadChecks" -}}
{{- if lt (int .Values.shutdown.drainTimeoutSeconds) 1 }}
{{- fail "shutdown.drainTimeoutSeconds must be at least 1" }}
{{- end }}
{{- if and (ge (int .Values.shutdown.drainTimeoutSeconds) 30) (not (dig "kafka" "rebalance_timeout" "" .Values.config)) }}
{{- fail (printf "shutdown.drainTimeoutSeconds (%d) must stay below kafka.rebalance_timeout (default 30s): set config.kafka.rebalance_timeout above it" (int .Values.shutdown.drainTimeoutSeconds)) }}
{{- end }}
{{- if not (has .Values.workload (list "deployment" "statefulset")) }}
{{- fail (printf "workload must be deployment or statefulset, not %q" (toString .Values.workload)) }}
{{- end }}
{{- end }}

{{/*
The pod template of the Deployment or StatefulSet (workload), at column 0: include it with
nindent under spec.template.
*/}}
{{- define "ampstream.podTemplate" -}}
{{- $fullname := include "ampstream.fullname" . }}
{{- $sasl := include "ampstream.saslEnabled" . -}}
metadata:
  labels:
    {{- include "ampstream.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # Roll the pods when the config or the chart-created Secret changes.
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
    {{- with .Values.commonAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "ampstream.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.automountServiceAccountToken }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  # drain timeout ({{ .Values.shutdown.drainTimeoutSeconds }}s) + margin ({{ .Values.shutdown.gracePeriodMarginSeconds }}s): commit, LeaveGroup, DLQ flush.
  terminationGracePeriodSeconds: {{ include "ampstream.gracePeriod" . }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: ampstream
      image: {{ include "ampstream.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: ["run", "--config", "/etc/ampstream/config.yaml"]
      ports:
        - name: admin
          containerPort: {{ .Values.admin.port }}
          protocol: TCP
      env:
        {{- if eq .Values.workload "statefulset" }}
        # Static group membership (KIP-345): the pod name is stable across restarts, so a pod
        # that returns within config.kafka.session_timeout gets its partitions back without a
        # rebalance.
        - name: AMPSTREAM_KAFKA_GROUP_INSTANCE_ID
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- end }}
        - name: AMPSTREAM_AMPLITUDE_API_KEY
          valueFrom:
            secretKeyRef:
              {{- include "ampstream.apiKeyRef" . | nindent 14 }}
        {{- if $sasl }}
        - name: AMPSTREAM_KAFKA_SASL_USERNAME
          valueFrom:
            secretKeyRef:
              {{- include "ampstream.saslUsernameRef" . | nindent 14 }}
        - name: AMPSTREAM_KAFKA_SASL_PASSWORD
          valueFrom:
            secretKeyRef:
              {{- include "ampstream.saslPasswordRef" . | nindent 14 }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.extraEnvFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if .Values.startupProbe.enabled }}
      startupProbe:
        httpGet:
          path: /startupz
          port: admin
        periodSeconds: {{ .Values.startupProbe.periodSeconds }}
        timeoutSeconds: {{ .Values.startupProbe.timeoutSeconds }}
        failureThreshold: {{ .Values.startupProbe.failureThreshold }}
      {{- end }}
      {{- if .Values.livenessProbe.enabled }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: admin
        initialDelaySeconds: {{ .Values.livenessProbe.initialDelaySeconds }}
        periodSeconds: {{ .Values.livenessProbe.periodSeconds }}
        timeoutSeconds: {{ .Values.livenessProbe.timeoutSeconds }}
        failureThreshold: {{ .Values.livenessProbe.failureThreshold }}
      {{- end }}
      {{- if .Values.readinessProbe.enabled }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: admin
        initialDelaySeconds: {{ .Values.readinessProbe.initialDelaySeconds }}
        periodSeconds: {{ .Values.readinessProbe.periodSeconds }}
        timeoutSeconds: {{ .Values.readinessProbe.timeoutSeconds }}
        failureThreshold: {{ .Values.readinessProbe.failureThreshold }}
      {{- end }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.containerSecurityContext | nindent 8 }}
      volumeMounts:
        # subPath, so extraVolumeMounts can add directories under /etc/ampstream (e.g. TLS
        # files); a subPath mount sees no live ConfigMap updates, which the checksum/config
        # rollout makes moot.
        - name: config
          mountPath: /etc/ampstream/config.yaml
          subPath: config.yaml
          readOnly: true
        - name: tmp
          mountPath: /tmp
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ $fullname }}
    # The root filesystem is read-only; /tmp is the only scratch space.
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- range . }}
    - {{- toYaml (merge (deepCopy .) (dict "labelSelector" (dict "matchLabels" (include "ampstream.selectorLabels" $ | fromYaml)))) | nindent 6 }}
    {{- end }}
  {{- end }}
{{- end }}

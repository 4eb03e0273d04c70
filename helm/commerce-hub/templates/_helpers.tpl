{{/*
Names, labels, and the parts every hub container shares (environment, volumes, mounts).
Paths inside the containers are fixed here, once; the HUB_* variables point at them.
*/}}

{{- define "commerce-hub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name, at most 63 characters (a DNS label). */}}
{{- define "commerce-hub.fullname" -}}
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

{{- define "commerce-hub.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "commerce-hub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "commerce-hub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "commerce-hub.labels" -}}
helm.sh/chart: {{ include "commerce-hub.chart" . }}
{{ include "commerce-hub.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: commerce-hub
{{- end }}

{{/* Labels of one component: (dict "ctx" $ "component" "worker") */}}
{{- define "commerce-hub.componentLabels" -}}
{{ include "commerce-hub.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "commerce-hub.componentSelectorLabels" -}}
{{ include "commerce-hub.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "commerce-hub.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "commerce-hub.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "commerce-hub.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The text of topics.yaml: the `topics` value, else the chart's copy of the repo's file. */}}
{{- define "commerce-hub.topics" -}}
{{- if .Values.topics }}
{{- .Values.topics }}
{{- else }}
{{- .Files.Get "files/topics.yaml" }}
{{- end }}
{{- end }}

{{- define "commerce-hub.topicsPath" -}}/etc/hub/topics/topics.yaml{{- end }}
{{- define "commerce-hub.saslPasswordPath" -}}/var/run/secrets/hub/kafka-sasl/password{{- end }}
{{- define "commerce-hub.tlsDir" -}}/var/run/secrets/hub/kafka-tls{{- end }}
{{- define "commerce-hub.connectorsDir" -}}/var/run/secrets/hub/connectors{{- end }}
{{- define "commerce-hub.webhookSecretsPath" -}}/var/run/secrets/hub/webhooks/secrets.json{{- end }}

{{/* Stops rendering on combinations the schema cannot express. */}}
{{- define "commerce-hub.validate" -}}
{{- $grace := int .Values.worker.terminationGracePeriodSeconds }}
{{- $drain := int (ceil .Values.kafka.shutdownTimeoutSeconds) }}
{{- if lt $grace (add $drain 10) }}
{{- fail (printf "worker.terminationGracePeriodSeconds (%d) must be at least kafka.shutdownTimeoutSeconds (%d) + 10: a stopping worker drains its partitions, then releases its leases, before Kubernetes sends SIGKILL" $grace $drain) }}
{{- end }}
{{- range .Values.connectors.secretFiles }}
{{- if not (hasSuffix "_FILE" .name) }}
{{- fail (printf "connectors.secretFiles: %s must end in _FILE (the variable names the mounted file)" .name) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Environment of every hub process, the migration job's included. */}}
{{- define "commerce-hub.env.common" -}}
- name: HUB_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.urlKey }}
- name: HUB_SCHEMA
  value: {{ .Values.hub.schema | quote }}
- name: HUB_POOL_MIN
  value: {{ .Values.database.poolMin | quote }}
- name: HUB_POOL_MAX
  value: {{ .Values.database.poolMax | quote }}
- name: HUB_MODULES
  value: {{ .Values.hub.modules | quote }}
- name: HUB_LEASE_SECONDS
  value: {{ .Values.hub.leaseSeconds | quote }}
# the root filesystem is read-only: whatever the hub writes goes under /tmp (an emptyDir)
- name: HUB_DATA_DIR
  value: /tmp/hub
{{- range $name, $value := .Values.hub.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- with .Values.hub.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Kafka and topics.yaml, for the worker and the API. */}}
{{- define "commerce-hub.env.kafka" -}}
- name: HUB_KAFKA_BOOTSTRAP
  value: {{ .Values.kafka.bootstrap | quote }}
- name: HUB_KAFKA_GROUP
  value: {{ .Values.kafka.group | quote }}
{{- with .Values.kafka.topicPrefix }}
- name: HUB_KAFKA_TOPIC_PREFIX
  value: {{ . | quote }}
{{- end }}
- name: HUB_KAFKA_SUBSCRIBERS
  value: {{ .Values.hub.subscribers | quote }}
- name: HUB_KAFKA_TOPICS_FILE
  value: {{ include "commerce-hub.topicsPath" . }}
- name: HUB_KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
- name: HUB_KAFKA_SHUTDOWN_TIMEOUT_S
  value: {{ .Values.kafka.shutdownTimeoutSeconds | quote }}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}
- name: HUB_KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: HUB_KAFKA_SASL_USERNAME
  value: {{ .Values.kafka.sasl.username | quote }}
- name: HUB_KAFKA_SASL_PASSWORD_FILE
  value: {{ include "commerce-hub.saslPasswordPath" . }}
{{- end }}
{{- if .Values.kafka.tls.existingSecret }}
{{- if .Values.kafka.tls.caKey }}
- name: HUB_KAFKA_SSL_CAFILE
  value: {{ include "commerce-hub.tlsDir" . }}/ca.crt
{{- end }}
{{- if .Values.kafka.tls.certKey }}
- name: HUB_KAFKA_SSL_CERTFILE
  value: {{ include "commerce-hub.tlsDir" . }}/tls.crt
- name: HUB_KAFKA_SSL_KEYFILE
  value: {{ include "commerce-hub.tlsDir" . }}/tls.key
{{- end }}
{{- end }}
{{- end }}

{{/* Connector settings and credentials, for the worker and the API (modules that build
connectors at import run in both). */}}
{{- define "commerce-hub.env.connectors" -}}
{{- range $name, $value := .Values.connectors.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- range .Values.connectors.secretEnv }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .key }}
{{- end }}
{{- range .Values.connectors.secretFiles }}
- name: {{ .name }}
  value: {{ include "commerce-hub.connectorsDir" $ }}/{{ trimSuffix "_FILE" .name }}
{{- end }}
{{- end }}

{{/* Volumes of the worker and API pods: /tmp, topics.yaml, Kafka and connector secrets. */}}
{{- define "commerce-hub.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
- name: topics
  configMap:
    name: {{ include "commerce-hub.fullname" . }}-topics
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}
- name: kafka-sasl
  secret:
    secretName: {{ .Values.kafka.sasl.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.kafka.sasl.passwordKey }}
        path: password
{{- end }}
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tls.existingSecret }}
    defaultMode: 0440
    items:
      {{- if .Values.kafka.tls.caKey }}
      - key: {{ .Values.kafka.tls.caKey }}
        path: ca.crt
      {{- end }}
      {{- if .Values.kafka.tls.certKey }}
      - key: {{ .Values.kafka.tls.certKey }}
        path: tls.crt
      - key: {{ .Values.kafka.tls.keyKey }}
        path: tls.key
      {{- end }}
{{- end }}
{{- with .Values.connectors.secretFiles }}
- name: connector-secrets
  projected:
    defaultMode: 0440
    sources:
      {{- range . }}
      - secret:
          name: {{ .secretName }}
          items:
            - key: {{ .key }}
              path: {{ trimSuffix "_FILE" .name }}
      {{- end }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "commerce-hub.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: topics
  mountPath: /etc/hub/topics
  readOnly: true
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}
- name: kafka-sasl
  mountPath: /var/run/secrets/hub/kafka-sasl
  readOnly: true
{{- end }}
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: {{ include "commerce-hub.tlsDir" . }}
  readOnly: true
{{- end }}
{{- if .Values.connectors.secretFiles }}
- name: connector-secrets
  mountPath: {{ include "commerce-hub.connectorsDir" . }}
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by the worker and the API: (dict "ctx" $ "part" .Values.worker) */}}
{{- define "commerce-hub.podScheduling" -}}
{{- with .part.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .part.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .part.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .part.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

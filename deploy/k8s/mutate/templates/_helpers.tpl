{{/*
Names, labels, images and the environment of each service.

The environment of a service is three parts:
- `mutate.config`: non-secret variables the chart derives from the shared
  sections (ports, peers, NATS, object storage, logging, OTel), merged with
  the service's `settings` map; rendered into its ConfigMap.
- `mutate.secretEnv`: the secret variables, each a secretKeyRef to the
  chart's Secret or to an existing Secret of yours.
- the downward API (MUTATE_WORKER_ID is the pod's name).
*/}}

{{- define "mutate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name, short enough for "-transformer-work" after it. */}}
{{- define "mutate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mutate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mutate.labels" -}}
helm.sh/chart: {{ include "mutate.chart" . }}
app.kubernetes.io/name: {{ include "mutate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mutate
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: (list $ "gateway"). */}}
{{- define "mutate.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "mutate.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "mutate.componentLabels" -}}
{{ include "mutate.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "mutate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mutate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image of a service: (list $ "gateway"). */}}
{{- define "mutate.image" -}}
{{- $root := index . 0 -}}
{{- $service := index . 1 -}}
{{- $own := (index $root.Values $service).image | default dict -}}
{{- $repository := printf "mutate-%s" $service -}}
{{- with $root.Values.image.registry }}
{{- $repository = printf "%s/mutate-%s" (trimSuffix "/" .) $service -}}
{{- end }}
{{- $repository = $own.repository | default $repository -}}
{{- $tag := $own.tag | default $root.Values.image.tag | default $root.Chart.AppVersion -}}
{{- if $own.digest }}
{{- printf "%s@%s" $repository $own.digest }}
{{- else }}
{{- printf "%s:%s" $repository (toString $tag) }}
{{- end }}
{{- end }}

{{/*
The components: one Deployment each. `service` is the package (image,
settings map, ConfigMap); `port` is its gRPC port (MUTATE_GRPC_PORT).
*/}}
{{- define "mutate.components" -}}
gateway:
  service: gateway
  args: [serve]
  port: 50051
  httpPort: 8080
  values: gateway
  expose: true
transformer:
  service: transformer
  args: [serve]
  port: 50053
  values: serve
  expose: true
transformer-work:
  service: transformer
  args: [work]
  port: 50053
  values: work
  expose: false
storage:
  service: storage
  args: []
  port: 50052
  values: storage
  expose: true
notifier:
  service: notifier
  args: [serve]
  port: 50054
  values: notifier
  expose: true
{{- end }}

{{/* The values of a component's Deployment: (list $ component). */}}
{{- define "mutate.componentValues" -}}
{{- $root := index . 0 -}}
{{- $c := index . 1 -}}
{{- if eq $c.service "transformer" }}
{{- toYaml (index $root.Values.transformer $c.values) }}
{{- else }}
{{- toYaml (index $root.Values $c.values) }}
{{- end }}
{{- end }}

{{/* What each service reads beyond its own settings map. */}}
{{- define "mutate.serviceNeeds" -}}
gateway:
  nats: true
  database: true
  migrateOnStart: true
  http: true
  peers: {MUTATE_STORAGE_ADDRESS: storage, MUTATE_TRANSFORMER_ADDRESS: transformer, MUTATE_NOTIFIER_ADDRESS: notifier}
  secrets: [MUTATE_NATS_URL, MUTATE_DATABASE_URL]
transformer:
  nats: true
  # It also reads TopologySettings (the workers heartbeat inside the ack wait).
  topology: true
  workerId: true
  peers: {MUTATE_STORAGE_ADDRESS: storage}
  secrets: [MUTATE_NATS_URL]
storage:
  objectStorage: true
  secrets: [S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, CLOUDFLARE_R2_ACCESS_KEY_ID, CLOUDFLARE_R2_SECRET_ACCESS_KEY]
notifier:
  nats: true
  database: true
  peers: {MUTATE_STORAGE_ADDRESS: storage}
  secrets: [MUTATE_NATS_URL, MUTATE_DATABASE_URL, MUTATE_SECRET_ENCRYPTION_KEY, WEBHOOK_SECRET]
{{- end }}

{{/* gRPC port of a service, for peers' addresses. */}}
{{- define "mutate.servicePort" -}}
{{- $components := include "mutate.components" . | fromYaml -}}
{{- toYaml (dict "gateway" $components.gateway.port "transformer" $components.transformer.port "storage" $components.storage.port "notifier" $components.notifier.port) }}
{{- end }}

{{/*
Non-secret environment of a service: (list $ "gateway" roleSettings), where
roleSettings (may be nil) override the service's settings map. The chart-derived
variables win; naming one of them in `settings` too is an error, so a value
is never silently ignored.
*/}}
{{- define "mutate.config" -}}
{{- $root := index . 0 -}}
{{- $service := index . 1 -}}
{{- $needs := index (include "mutate.serviceNeeds" $root | fromYaml) $service -}}
{{- $ports := include "mutate.servicePort" $root | fromYaml -}}
{{- $fullname := include "mutate.fullname" $root -}}
{{- $v := $root.Values -}}
{{- $env := dict
  "MUTATE_GRPC_HOST" "0.0.0.0"
  "MUTATE_GRPC_PORT" (toString (index $ports $service))
  "MUTATE_LOG_LEVEL" $v.logging.level
  "MUTATE_LOG_FORMAT" $v.logging.format
  "MUTATE_METRICS_PORT" (toString $v.metrics.port)
-}}
{{- if $needs.http }}
{{- $_ := set $env "MUTATE_HTTP_HOST" "0.0.0.0" }}
{{- $_ := set $env "MUTATE_HTTP_PORT" "8080" }}
{{- end }}
{{- if $needs.migrateOnStart }}
{{- $_ := set $env "MUTATE_MIGRATE_ON_START" (ternary "false" "true" $v.hooks.migrations.enabled) }}
{{- end }}
{{- range $name, $peer := $needs.peers | default dict }}
{{- $_ := set $env $name (printf "%s-%s:%v" $fullname $peer (index $ports $peer)) }}
{{- end }}
{{- if $needs.objectStorage }}
{{- $os := $v.objectStorage }}
{{- $_ := set $env "STORAGE_PROVIDER" $os.provider }}
{{- $_ := set $env "S3_PUBLIC_ENDPOINT" $os.publicEndpoint }}
{{- $_ := set $env "S3_ADDRESSING_STYLE" $os.addressingStyle }}
{{- $_ := set $env "S3_ENDPOINT" $os.s3.endpoint }}
{{- $_ := set $env "S3_BUCKET" $os.s3.bucket }}
{{- $_ := set $env "S3_REGION" $os.s3.region }}
{{- $_ := set $env "S3_SECURE" (toString $os.s3.secure) }}
{{- $_ := set $env "CLOUDFLARE_R2_ENDPOINT" $os.r2.endpoint }}
{{- $_ := set $env "CLOUDFLARE_R2_BUCKET" $os.r2.bucket }}
{{- $_ := set $env "CLOUDFLARE_R2_REGION" $os.r2.region }}
{{- end }}
{{- with $v.otel.endpoint }}
{{- $_ := set $env "OTEL_EXPORTER_OTLP_ENDPOINT" . }}
{{- $_ := set $env "OTEL_EXPORTER_OTLP_PROTOCOL" $v.otel.protocol }}
{{- $_ := set $env "OTEL_SERVICE_NAME" (printf "mutate-%s" $service) }}
{{- $_ := set $env "OTEL_TRACES_SAMPLER" $v.otel.sampler }}
{{- $_ := set $env "OTEL_TRACES_SAMPLER_ARG" (toString $v.otel.samplerArg) }}
{{- with $v.otel.resourceAttributes }}
{{- $_ := set $env "OTEL_RESOURCE_ATTRIBUTES" . }}
{{- end }}
{{- end }}
{{- if $needs.topology }}
{{- range $name, $value := $v.topology.settings }}
{{- $_ := set $env $name (toString $value) }}
{{- end }}
{{- end }}
{{- $settings := merge (dict) (index . 2 | default dict) ((index $v $service).settings | default dict) }}
{{- range $name, $value := $settings }}
{{- if hasKey $env $name }}
{{- fail (printf "%s.settings.%s: the chart sets %s itself; use the values section that derives it" $service $name $name) }}
{{- end }}
{{- if has $name $needs.secrets }}
{{- fail (printf "%s.settings.%s is a secret; set it through its Secret values, never in settings" $service $name) }}
{{- end }}
{{- $_ := set $env $name (toString $value) }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/*
Every secret variable: where its value comes from. `key` is its key in the
chart's Secret; `existing`/`existingKey` name a Secret of yours instead;
`optional` ones may be absent.
*/}}
{{- define "mutate.secretSources" -}}
{{- $v := .Values -}}
{{- $os := $v.objectStorage -}}
{{- $r2 := eq $os.provider "r2" -}}
{{- $wh := $v.webhooks -}}
MUTATE_NATS_URL:
  key: nats-url
  value: {{ $v.nats.url | toJson }}
  existing: {{ $v.nats.existingSecret.name | toJson }}
  existingKey: {{ $v.nats.existingSecret.key | toJson }}
  optional: false
MUTATE_DATABASE_URL:
  key: database-url
  value: {{ $v.postgresql.url | toJson }}
  existing: {{ $v.postgresql.existingSecret.name | toJson }}
  existingKey: {{ $v.postgresql.existingSecret.key | toJson }}
  optional: false
S3_ACCESS_KEY_ID:
  key: s3-access-key-id
  value: {{ $os.s3.accessKeyId | toJson }}
  existing: {{ ternary "" $os.existingSecret.name $r2 | toJson }}
  existingKey: {{ $os.existingSecret.accessKeyIdKey | toJson }}
  optional: {{ $r2 }}
S3_SECRET_ACCESS_KEY:
  key: s3-secret-access-key
  value: {{ $os.s3.secretAccessKey | toJson }}
  existing: {{ ternary "" $os.existingSecret.name $r2 | toJson }}
  existingKey: {{ $os.existingSecret.secretAccessKeyKey | toJson }}
  optional: {{ $r2 }}
CLOUDFLARE_R2_ACCESS_KEY_ID:
  key: r2-access-key-id
  value: {{ $os.r2.accessKeyId | toJson }}
  existing: {{ ternary $os.existingSecret.name "" $r2 | toJson }}
  existingKey: {{ $os.existingSecret.accessKeyIdKey | toJson }}
  optional: {{ not $r2 }}
CLOUDFLARE_R2_SECRET_ACCESS_KEY:
  key: r2-secret-access-key
  value: {{ $os.r2.secretAccessKey | toJson }}
  existing: {{ ternary $os.existingSecret.name "" $r2 | toJson }}
  existingKey: {{ $os.existingSecret.secretAccessKeyKey | toJson }}
  optional: {{ not $r2 }}
WEBHOOK_SECRET:
  key: webhook-secret
  value: {{ $wh.secret | toJson }}
  existing: {{ $wh.existingSecret.name | toJson }}
  existingKey: {{ $wh.existingSecret.secretKey | toJson }}
  optional: true
MUTATE_SECRET_ENCRYPTION_KEY:
  key: secret-encryption-key
  value: {{ $wh.encryptionKey | toJson }}
  existing: {{ $wh.existingSecret.name | toJson }}
  existingKey: {{ $wh.existingSecret.encryptionKeyKey | toJson }}
  optional: true
{{- end }}

{{/*
Data of a chart-made Secret: every secret value not taken from an existing
Secret. Optional ones only when set, so their references stay unset.
*/}}
{{- define "mutate.secretData" -}}
{{- range $name, $s := include "mutate.secretSources" . | fromYaml }}
{{- if and (not $s.existing) (or $s.value (not $s.optional)) }}
{{ $s.key }}: {{ $s.value | toString | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
secretKeyRef env entries of a service: (list $ "gateway" secretName), where
secretName is the chart's Secret (the hooks have their own).
*/}}
{{- define "mutate.secretEnv" -}}
{{- $root := index . 0 -}}
{{- $needs := index (include "mutate.serviceNeeds" $root | fromYaml) (index . 1) -}}
{{- $chartSecret := index . 2 -}}
{{- $sources := include "mutate.secretSources" $root | fromYaml -}}
{{- range $name := $needs.secrets }}
{{- $s := index $sources $name }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $s.existing | default $chartSecret }}
      key: {{ ternary $s.existingKey $s.key (ne $s.existing "") }}
      optional: {{ $s.optional }}
{{- end }}
{{- end }}

{{/* Downward-API env of a service: (list $ "transformer"). */}}
{{- define "mutate.fieldEnv" -}}
{{- $needs := index (include "mutate.serviceNeeds" (index . 0) | fromYaml) (index . 1) -}}
{{- if $needs.workerId }}
- name: MUTATE_WORKER_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
{{- end }}

{{/* Whether the hooks need a Secret of their own (any value not existing). */}}
{{- define "mutate.hookSecretData" -}}
{{- $sources := include "mutate.secretSources" . | fromYaml -}}
{{- range $name := list "MUTATE_NATS_URL" "MUTATE_DATABASE_URL" "MUTATE_SECRET_ENCRYPTION_KEY" "WEBHOOK_SECRET" }}
{{- $s := index $sources $name }}
{{- if and (not $s.existing) (or $s.value (not $s.optional)) }}
{{ $s.key }}: {{ $s.value | toString | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mutate.hookJobSpec" -}}
backoffLimit: {{ .Values.hooks.backoffLimit }}
activeDeadlineSeconds: {{ .Values.hooks.activeDeadlineSeconds }}
ttlSecondsAfterFinished: {{ .Values.hooks.ttlSecondsAfterFinished }}
{{- end }}

{{/*
Pod spec shared by the hook jobs. They run before the release's
ServiceAccount exists, so they use a ServiceAccount of yours only when the
chart does not create one.
*/}}
{{- define "mutate.hookPodSpec" -}}
restartPolicy: Never
{{- if and (not .Values.serviceAccount.create) .Values.serviceAccount.name }}
serviceAccountName: {{ .Values.serviceAccount.name }}
{{- end }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
{{- end }}

{{- define "mutate.hookContainerSpec" -}}
resources:
  {{- toYaml .Values.hooks.resources | nindent 2 }}
securityContext:
  {{- toYaml .Values.containerSecurityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end }}

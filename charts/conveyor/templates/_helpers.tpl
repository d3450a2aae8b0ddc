{{/*
Names are fixed (conveyor-*), not derived from the release: CRDs and webhook
configurations are cluster-wide, so a cluster holds one Conveyor, and the
manager injects its CA into webhook configurations it knows by name.
*/}}

{{- define "conveyor.labels" -}}
app.kubernetes.io/name: conveyor
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "conveyor.selectorLabels" -}}
app.kubernetes.io/name: conveyor
app.kubernetes.io/component: manager
{{- end -}}

{{- /* The pod labels of the manager (shard "") or of a shard's manager:
only the first is behind the webhook, receiver and metrics Services. */}}
{{- define "conveyor.shardSelectorLabels" -}}
app.kubernetes.io/name: conveyor
{{- if . }}
app.kubernetes.io/component: manager-shard
conveyor.dev/shard: {{ . | quote }}
{{- else }}
app.kubernetes.io/component: manager
{{- end }}
{{- end -}}

{{- /* A shard's leader election Lease. */}}
{{- define "conveyor.shardLease" -}}
conveyor-shard-{{ . }}.conveyor.dev
{{- end -}}

{{- define "conveyor.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "conveyor.serviceAccount" -}}
- kind: ServiceAccount
  name: conveyor-manager
  namespace: {{ .Release.Namespace }}
{{- end -}}

{{/* The webhook configurations' client config: the Service, and the CA annotation when cert-manager injects it. */}}
{{- define "conveyor.webhookAnnotations" -}}
{{- if .Values.certManager.enabled }}
annotations:
  cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/conveyor-serving-cert
{{- end }}
{{- end -}}

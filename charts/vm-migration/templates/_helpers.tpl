{{/* Object name prefix: the release name, or fullnameOverride. */}}
{{- define "vm-migration.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object of the chart. */}}
{{- define "vm-migration.labels" -}}
app.kubernetes.io/name: vm-migration
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "vm-migration.apiserver.name" -}}
{{- include "vm-migration.fullname" . }}-apiserver
{{- end -}}

{{- define "vm-migration.apiserver.serviceAccountName" -}}
{{- default (include "vm-migration.apiserver.name" .) .Values.apiserver.serviceAccount.name -}}
{{- end -}}

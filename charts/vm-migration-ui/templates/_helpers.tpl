{{- define "vm-migration-ui.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* The package's name and version: Rancher loads <name>-<version>.umd.min.js. */}}
{{- define "vm-migration-ui.package" -}}
vm-migration
{{- end -}}

{{- define "vm-migration-ui.labels" -}}
app.kubernetes.io/name: vm-migration-ui
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "vm-migration-ui.selector" -}}
app.kubernetes.io/name: vm-migration-ui
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

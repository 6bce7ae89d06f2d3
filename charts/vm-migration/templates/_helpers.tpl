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

{{- define "vm-migration.controller.name" -}}
{{- include "vm-migration.fullname" . }}-controller
{{- end -}}

{{- define "vm-migration.controller.serviceAccountName" -}}
{{- default (include "vm-migration.controller.name" .) .Values.controller.serviceAccount.name -}}
{{- end -}}

{{/* Selector labels of one component (apiserver or controller). */}}
{{- define "vm-migration.selector" -}}
app.kubernetes.io/name: vm-migration
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The image of a component: its repository, and the tag (default: the app version). */}}
{{- define "vm-migration.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* Pod and container security every pod of the chart runs with (restricted). */}}
{{- define "vm-migration.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "vm-migration.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Chart name, shortened to a DNS label. */}}
{{- define "flowrun-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: the release name when it already contains the chart name, else
"<release>-<chart>", shortened to a DNS label.
*/}}
{{- define "flowrun-operator.fullname" -}}
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

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "flowrun-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels of every object of the release. */}}
{{- define "flowrun-operator.labels" -}}
helm.sh/chart: {{ include "flowrun-operator.chart" . }}
{{ include "flowrun-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: flowrun-operator
{{- end }}

{{/* Labels that select the operator's Pod (immutable in the Deployment's selector). */}}
{{- define "flowrun-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flowrun-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "flowrun-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flowrun-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator's image reference. */}}
{{- define "flowrun-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The operator's RBAC rules, shared by the ClusterRole (all namespaces) and the per-namespace Roles
(watchNamespaces). Exactly what the operator calls; see values.yaml and README.md for why each is needed.
*/}}
{{- define "flowrun-operator.rules" -}}
# Watch and list FlowRuns; delete the finished ones whose spec.ttlSecondsAfterFinished has passed (and those
# beyond a FlowSchedule's history limits); create a FlowSchedule's runs; set spec.cancel on the unfinished runs
# a schedule with concurrencyPolicy Replace replaces.
- apiGroups: ["flowrun.io"]
  resources: ["flowruns"]
  verbs: ["get", "list", "watch", "delete", "create", "patch"]
# Write a run's phase, conditions and task runs through the status subresource.
- apiGroups: ["flowrun.io"]
  resources: ["flowruns/status"]
  verbs: ["get", "patch"]
# Jobs carry an ownerReference to their FlowRun with blockOwnerDeletion: true; clusters enforcing
# OwnerReferencesPermissionEnforcement allow that only to users who may update the owner's finalizers.
- apiGroups: ["flowrun.io"]
  resources: ["flowruns/finalizers"]
  verbs: ["update"]
# Read ConcurrencyLimits (never written by the operator).
- apiGroups: ["flowrun.io"]
  resources: ["concurrencylimits"]
  verbs: ["get", "list", "watch"]
# Write a limit's inUse, pending, active and conditions through the status subresource.
- apiGroups: ["flowrun.io"]
  resources: ["concurrencylimits/status"]
  verbs: ["get", "patch"]
# Read FlowSchedules (never written by the operator) and write their status: last and next times, active runs.
- apiGroups: ["flowrun.io"]
  resources: ["flowschedules"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["flowrun.io"]
  resources: ["flowschedules/status"]
  verbs: ["get", "patch"]
# A schedule's runs carry an ownerReference to it with blockOwnerDeletion: true (see flowruns/finalizers).
- apiGroups: ["flowrun.io"]
  resources: ["flowschedules/finalizers"]
  verbs: ["update"]
# One Job per (task) run attempt; a run's phase comes from its Jobs; cancelling a run deletes its Jobs.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# Events on FlowRuns and ConcurrencyLimits (posted by the operator and by Kopf).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

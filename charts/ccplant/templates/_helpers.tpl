{{/*
The chart name, overridable with nameOverride.
*/}}
{{- define "ccplant.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name (63 characters at most, DNS label). A release named like the chart
("ccplant") is just "ccplant".
*/}}
{{- define "ccplant.fullname" -}}
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

{{- define "ccplant.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object of the release.
*/}}
{{- define "ccplant.labels" -}}
helm.sh/chart: {{ include "ccplant.chart" . }}
{{ include "ccplant.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ccplant
{{- end }}

{{/*
Labels that select the operator's pods (immutable once installed).
*/}}
{{- define "ccplant.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ccplant.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "ccplant.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ccplant.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ccplant.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Leader election is on when asked for and always with more than one replica (two replicas
reconciling at once would fight over every object).
*/}}
{{- define "ccplant.leaderElect" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ else }}false{{ end }}
{{- end }}

{{- define "ccplant.leaseName" -}}
{{- default (printf "%s-operator" (include "ccplant.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
The RBAC rules the operator needs in every namespace it watches. Each verb is used by the code
(see the comments); nothing else is granted. Secrets: get (the credentials an object points
at) and create/patch/delete (the per-session token Secret) - never list or watch.
*/}}
{{- define "ccplant.watchRules" -}}
# Controllers watch both kinds; `run` lists them (limit 1) to check the CRDs exist; a
# One watch of AgentSessions serves both controllers (a GitHubTask reads the session it waits
# for from it); ttlAfterFinished deletes a session.
# patch: the finalizer ccplant.io/revoke-token, added while a session holds a live GitHub App
# token and removed once it is revoked.
- apiGroups: ["ccplant.io"]
  resources: ["agentsessions"]
  verbs: ["list", "watch", "patch", "delete"]
- apiGroups: ["ccplant.io"]
  resources: ["githubtasks"]
  verbs: ["list", "watch"]
# Status is written with server-side apply (PATCH on the status subresource).
- apiGroups: ["ccplant.io"]
  resources: ["agentsessions/status", "githubtasks/status"]
  verbs: ["patch"]
# Children carry owner references with blockOwnerDeletion: clusters running the
# OwnerReferencesPermissionEnforcement admission plugin require this to create them.
- apiGroups: ["ccplant.io"]
  resources: ["agentsessions/finalizers"]
  verbs: ["update"]
# Session pods: watched (label selector managed-by=ccplant), applied (server-side apply creates
# them: patch + create) and deleted on suspend, expiry and finish.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Session Service, workspace PVC: watched and applied; removed by garbage collection.
- apiGroups: [""]
  resources: ["services", "persistentvolumeclaims"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Credentials: read only by name; the session token Secret is applied and deleted on revoke.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch", "delete"]
# Events of phase transitions and errors (kube-runtime Recorder: create, then patch a series).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

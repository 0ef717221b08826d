{{/* Chart name, overridable. */}}
{{- define "baton.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name of the namespaced objects: the release name, with the chart name unless it is already in it. */}}
{{- define "baton.fullname" -}}
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

{{/* Name of the cluster-scoped objects: release names are unique per namespace only, so the namespace is part of it. */}}
{{- define "baton.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "baton.fullname" .) | trunc 253 | trimSuffix "-" }}
{{- end }}

{{- define "baton.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "baton.selectorLabels" -}}
app.kubernetes.io/name: {{ include "baton.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "baton.labels" -}}
helm.sh/chart: {{ include "baton.chart" . }}
{{ include "baton.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: baton
{{- end }}

{{- define "baton.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "baton.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "baton.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The namespaces the controller watches, as JSON (read it with fromJsonArray):
watchNamespaces, plus watchNamespace (one name, kept for existing installs), each
once; [] means all namespaces. Each must be a DNS label: it becomes a Role's
namespace and a --namespace value.
*/}}
{{- define "baton.watchNamespaces" -}}
{{- $names := list }}
{{- range (concat .Values.watchNamespaces (compact (list .Values.watchNamespace))) }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" (toString .)) }}
{{- fail (printf "watchNamespaces: %q is not a namespace name (a DNS label)" (toString .)) }}
{{- end }}
{{- $names = append $names (toString .) }}
{{- end }}
{{- $names | uniq | toJson }}
{{- end }}

{{/*
The rules on namespaced objects (README.md, "RBAC", says why each is there). A
ClusterRole when the controller watches all namespaces, a Role in each watched
namespace otherwise.
*/}}
{{- define "baton.namespacedRules" -}}
- apiGroups: [baton.dev]
  resources: [jobs]
  verbs: [get, list, watch, delete]
- apiGroups: [baton.dev]
  resources: [jobs/status]
  verbs: [update, patch]
- apiGroups: [baton.dev]
  resources: [runners]
  verbs: [list, watch, create, delete]
- apiGroups: [baton.dev]
  resources: [runners/status]
  verbs: [patch]
- apiGroups: [baton.dev]
  resources: [runnertokens]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [baton.dev]
  resources: [runnertokens/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# A finished Job's step pods and workspace claim are removed (unless
# controller.keepStepPods): by label, and the claim by name.
- apiGroups: [""]
  resources: [pods]
  verbs: [deletecollection]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [delete]
{{- if .Values.rbac.onDemandRunners }}
# On-demand runner pods (rbac.onDemandRunners): the pods themselves, and the
# ServiceAccount, Role and RoleBinding `baton-runner` they run as. Kubernetes lets
# the controller grant only what it holds, so it also holds what that Role grants:
# pods (incl. deletecollection), pods/log, pods/exec and persistentvolumeclaims.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, delete, deletecollection]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
- apiGroups: [""]
  resources: [pods/exec]
  verbs: [get, create]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, create, delete]
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [create, patch]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [create, patch]
{{- end }}
{{- end }}

{{/* Value of the baton.dev/leader label the leader puts on its pod: the Lease's name. */}}
{{- define "baton.leaseName" -}}
{{- include "baton.fullname" . }}
{{- end }}

{{/* The runner API as pods in the cluster reach it: the release's Service. */}}
{{- define "baton.serviceURL" -}}
{{- printf "%s://%s.%s.svc:%v" (ternary "https" "http" .Values.tls.enabled) (include "baton.fullname" .) .Release.Namespace .Values.service.port }}
{{- end }}

{{/* Where the TLS Secret is mounted in the controller and static runner pods. */}}
{{- define "baton.tlsDir" -}}/etc/baton/tls{{- end }}

{{/* Namespace of the Runners of static runner entries without their own: the first watched namespace, else the release's. */}}
{{- define "baton.runnerNamespace" -}}
{{- $watched := include "baton.watchNamespaces" . | fromJsonArray }}
{{- default (default .Release.Namespace (first $watched)) .Values.runnerDefaults.namespace }}
{{- end }}

{{/*
Whether the controller pods must share one node: a log PVC that is not ReadWriteMany,
mounted by two pods at once — two replicas, or the surge pod of a rolling update
(leader election). ReadWriteOncePod cannot be shared at all.
*/}}
{{- define "baton.colocate" -}}
{{- $p := .Values.logStorage.persistence }}
{{- $together := or (gt (int .Values.replicaCount) 1) .Values.leaderElection.enabled }}
{{- if and $p.enabled $together (has "ReadWriteOncePod" $p.accessModes) (not (has "ReadWriteMany" $p.accessModes)) }}
{{- fail "logStorage.persistence.accessModes ReadWriteOncePod lets one pod mount the log volume, but two controller pods mount it (replicas, or a rolling update's new pod): use ReadWriteMany, or ReadWriteOnce (the pods then share a node)" }}
{{- end }}
{{- if and $p.enabled $together (not (has "ReadWriteMany" $p.accessModes)) }}true{{ end }}
{{- end }}

{{/* Labels of a static runner's objects; call with (dict "root" $ "name" NAME). */}}
{{- define "baton.runnerLabels" -}}
helm.sh/chart: {{ include "baton.chart" .root }}
{{ include "baton.runnerSelectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: baton
{{- end }}

{{- define "baton.runnerSelectorLabels" -}}
app.kubernetes.io/name: {{ include "baton.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: runner
{{- with .name }}
baton.dev/static-runner: {{ . }}
{{- end }}
{{- end }}

{{/* Static runner entries merged over runnerDefaults, each with its namespace: a list of dicts. */}}
{{- define "baton.runners" -}}
{{- $watched := include "baton.watchNamespaces" . | fromJsonArray }}
{{- $out := list }}
{{- range .Values.runners }}
{{- $r := mergeOverwrite (deepCopy $.Values.runnerDefaults) (deepCopy .) }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" (toString $r.name)) }}
{{- fail (printf "runners[].name %q must be a DNS label: 1 to 63 of a-z, 0-9 and '-'" (toString $r.name)) }}
{{- end }}
{{- $_ := set $r "namespace" (default (include "baton.runnerNamespace" $) $r.namespace) }}
{{- if and $watched (not (has $r.namespace $watched)) }}
{{- fail (printf "runners[] %s: namespace %s is not in watchNamespaces %s, the namespaces the controller serves" $r.name $r.namespace (join "," $watched)) }}
{{- end }}
{{- if not (has $r.backend (list "kubernetes" "local")) }}
{{- fail (printf "runners[] %s: backend must be kubernetes or local" $r.name) }}
{{- end }}
{{- $out = append $out $r }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
Admission (templates/admission.yaml): when a policy looks at a Job at all. A create;
an update only when a field the policies read changed (the CRD keeps a Job's spec
immutable but spec.cancel, so cancelling a Job is never refused here).
*/}}
{{- define "baton.admissionChanged" -}}
- name: reads-changed
  expression: >-
    request.operation == 'CREATE' || object.spec.steps != oldObject.spec.steps
    || has(object.spec.onDemand) != has(oldObject.spec.onDemand)
    || (has(object.spec.onDemand) && object.spec.onDemand != oldObject.spec.onDemand)
{{- end }}

{{/*
Admission: every Secret name the Job's steps reference (env valueFrom.secretKeyRef
and secret volumes), in step order, repeats kept. Secret names never hold a comma, so the per-step lists
are joined and split again (a list of lists cannot be flattened before Kubernetes
1.34's CEL). Fields set to null count as unset.
*/}}
{{- define "baton.admissionSecretRefs" -}}
- name: secretRefs
  expression: >-
    object.spec.steps.map(s, (has(s.env) && s.env != null
    ? s.env.filter(e, has(e.valueFrom) && e.valueFrom != null
    && has(e.valueFrom.secretKeyRef) && e.valueFrom.secretKeyRef != null)
    .map(e, string(e.valueFrom.secretKeyRef.name)).join(',')
    : '') + ',' + (has(s.volumes) && s.volumes != null
    ? s.volumes.filter(v, has(v.secret) && v.secret != null)
    .map(v, string(v.secret.name)).join(',')
    : '')).join(',').split(',').filter(n, n != '')
{{- end }}

{{/* Admission: the namespaces a binding covers (the watched ones, else all). */}}
{{- define "baton.admissionNamespaces" -}}
{{- if include "baton.watchNamespaces" . | fromJsonArray }}
matchResources:
  namespaceSelector:
    {{- include "baton.servedNamespaces" . | nindent 4 }}
{{- end }}
{{- end }}

{{/* A namespaceSelector's body for the namespaces this release serves: the watched ones, else all. */}}
{{- define "baton.servedNamespaces" -}}
{{- $watched := include "baton.watchNamespaces" . | fromJsonArray }}
{{- if eq (len $watched) 1 -}}
matchLabels:
  kubernetes.io/metadata.name: {{ first $watched }}
{{- else if $watched -}}
matchExpressions:
- key: kubernetes.io/metadata.name
  operator: In
  values: {{ toJson $watched }}
{{- else -}}
{}
{{- end }}
{{- end }}

{{/* The dashboard's objects: the full name with "-dashboard". */}}
{{- define "baton.dashboardName" -}}
{{- printf "%s-dashboard" (include "baton.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "baton.dashboardSelectorLabels" -}}
app.kubernetes.io/name: {{ include "baton.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: dashboard
{{- end }}

{{- define "baton.dashboardLabels" -}}
helm.sh/chart: {{ include "baton.chart" . }}
{{ include "baton.dashboardSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: baton
{{- end }}

{{- define "baton.dashboardServiceAccountName" -}}
{{- if .Values.dashboard.serviceAccount.create }}
{{- default (include "baton.dashboardName" .) .Values.dashboard.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.dashboard.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "true" when the dashboard relays logs: dashboard.logs.enabled, or (null, the
default) exactly when it acts as proxied users, who are then checked per Job. */}}
{{- define "baton.dashboardLogs" -}}
{{- $d := .Values.dashboard }}
{{- and $d.enabled (ternary (not (empty $d.proxyUserHeader)) $d.logs.enabled (kindIs "invalid" $d.logs.enabled)) }}
{{- end }}

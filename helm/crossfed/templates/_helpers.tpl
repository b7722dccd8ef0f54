{{/* Names: everything is prefixed by the release so that two releases never collide. */}}
{{- define "crossfed.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. The NetworkPolicies select the release's pods by `app.kubernetes.io/instance`. */}}
{{- define "crossfed.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "crossfed.labels" -}}
{{ include "crossfed.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* image: (dict "image" .Values.image "override" <map> "chart" .Chart) -> repository:tag */}}
{{- define "crossfed.image" -}}
{{- $override := .override | default dict -}}
{{- $repository := $override.repository | default .image.repository -}}
{{- $tag := $override.tag | default .image.tag | default .chart.AppVersion -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}

{{- define "crossfed.serviceAccountName" -}}
{{- if .Values.serviceAccount.name -}}{{ .Values.serviceAccount.name }}
{{- else if .Values.serviceAccount.create -}}{{ include "crossfed.fullname" . }}
{{- end -}}
{{- end -}}

{{/*
What every pod spec of the release shares besides its securityContext: the service account and whether
its token is mounted, image pull secrets and scheduling.
(dict "root" $ "pod" <values with nodeSelector/tolerations/affinity/serviceAccountName> "automount" <bool>)
*/}}
{{- define "crossfed.podCommon" -}}
{{- $root := .root -}}
{{- $pod := .pod | default dict -}}
automountServiceAccountToken: {{ .automount | default $root.Values.serviceAccount.automountToken }}
{{- with ($pod.serviceAccountName | default (include "crossfed.serviceAccountName" $root)) }}
serviceAccountName: {{ . }}
{{- end }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $pod.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $pod.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $pod.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The root filesystem is read-only: one writable emptyDir at /tmp per pod, HOME inside it. */}}
{{- define "crossfed.scratchVolume" -}}
- name: tmp
  emptyDir: {}
{{- end -}}
{{- define "crossfed.scratchMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}
{{- define "crossfed.scratchEnv" -}}
- name: HOME
  value: /tmp/home
{{- end -}}

{{/* Secret names: the user's existing Secret, or the one the chart creates from values. */}}
{{- define "crossfed.rayTokenSecret" -}}
{{- if .Values.ray.auth.existingSecret -}}{{ .Values.ray.auth.existingSecret }}
{{- else if .Values.ray.auth.token -}}{{ include "crossfed.fullname" . }}-ray-token
{{- else -}}{{ fail "Ray token authentication needs a token: set ray.auth.existingSecret (a Secret with key auth_token) or ray.auth.token" }}
{{- end -}}
{{- end -}}

{{- define "crossfed.mlflowAdminSecret" -}}
{{- $auth := .Values.mlflow.auth -}}
{{- if $auth.existingSecret -}}{{ $auth.existingSecret }}
{{- else if and $auth.adminUsername $auth.adminPassword $auth.flaskSecretKey -}}{{ include "crossfed.fullname" . }}-mlflow-admin
{{- else -}}{{ fail "MLflow authentication needs admin credentials and a session secret key: set mlflow.auth.existingSecret (a Secret with keys username, password and flaskSecretKey) or all of mlflow.auth.adminUsername, mlflow.auth.adminPassword and mlflow.auth.flaskSecretKey" }}
{{- end -}}
{{- end -}}

{{- define "crossfed.mlflowJobUserSecret" -}}
{{- $user := .Values.mlflow.auth.jobUser -}}
{{- if $user.existingSecret -}}{{ $user.existingSecret }}
{{- else if and $user.username $user.password -}}{{ include "crossfed.fullname" . }}-mlflow-job-user
{{- else -}}{{ fail "Ray jobs log to MLflow as an ordinary user: set mlflow.auth.jobUser.existingSecret (a Secret with keys username and password) or both mlflow.auth.jobUser.username and mlflow.auth.jobUser.password" }}
{{- end -}}
{{- end -}}

{{- define "crossfed.postgresqlSecret" -}}
{{- if .Values.postgresql.auth.existingSecret -}}{{ .Values.postgresql.auth.existingSecret }}
{{- else if .Values.postgresql.auth.password -}}{{ include "crossfed.fullname" . }}-postgresql
{{- else -}}{{ fail "the bundled PostgreSQL needs a password: set postgresql.auth.existingSecret (a Secret with key password) or postgresql.auth.password, or disable it and set mlflow.externalDatabase" }}
{{- end -}}
{{- end -}}

{{- define "crossfed.minioSecret" -}}
{{- if .Values.minio.auth.existingSecret -}}{{ .Values.minio.auth.existingSecret }}
{{- else if and .Values.minio.auth.rootUser .Values.minio.auth.rootPassword -}}{{ include "crossfed.fullname" . }}-minio
{{- else -}}{{ fail "the bundled MinIO needs credentials: set minio.auth.existingSecret (a Secret with keys rootUser and rootPassword) or both minio.auth.rootUser and minio.auth.rootPassword" }}
{{- end -}}
{{- end -}}

{{- define "crossfed.mlflowService" -}}{{ include "crossfed.fullname" . }}-mlflow{{- end -}}
{{- define "crossfed.mlflowUrl" -}}http://{{ include "crossfed.mlflowService" . }}:{{ .Values.mlflow.port }}{{- end -}}
{{- define "crossfed.rayClusterName" -}}{{ include "crossfed.fullname" . }}-ray{{- end -}}

{{/*
The chart's S3 store (bundled MinIO or an external bucket) as JSON: bucket, endpoint, and the Secret with
its keys. The MLflow artifacts and the run storage both live there.
*/}}
{{- define "crossfed.s3Store" -}}
{{- if .Values.minio.enabled -}}
{{- dict "bucket" .Values.minio.bucket "endpoint" (printf "http://%s-minio:9000" (include "crossfed.fullname" .)) "secret" (include "crossfed.minioSecret" .) "idKey" "rootUser" "secretKey" "rootPassword" | toJson -}}
{{- else -}}
{{- $artifacts := .Values.mlflow.artifacts -}}
{{- dict "bucket" $artifacts.bucket "endpoint" $artifacts.endpoint "secret" $artifacts.existingSecret "idKey" "AWS_ACCESS_KEY_ID" "secretKey" "AWS_SECRET_ACCESS_KEY" | toJson -}}
{{- end -}}
{{- end -}}

{{/* AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from a Secret: (dict "secret" <name> "idKey" <key> "secretKey" <key>) */}}
{{- define "crossfed.awsCredentialsEnv" -}}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ .secret }}, key: {{ .idKey }}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ .secret }}, key: {{ .secretKey }}}
{{- end -}}

{{/* The run storage URI: runStorage.uri, else s3://<the S3 store's bucket>/runs. */}}
{{- define "crossfed.runStorageUri" -}}
{{- if .Values.runStorage.uri -}}{{ .Values.runStorage.uri }}
{{- else -}}
{{- $store := include "crossfed.s3Store" . | fromJson -}}
{{- if not $store.bucket -}}{{ fail "runStorage needs a location: set runStorage.uri, or mlflow.artifacts.bucket, or enable the bundled minio (or set runStorage.enabled=false)" }}{{- end -}}
s3://{{ $store.bucket }}/runs
{{- end -}}
{{- end -}}

{{/*
Environment of every Ray container: token auth; the MLflow server with the ordinary job user's
credentials (never the admin's); the run storage with the group's own S3 credentials; extra env.
(dict "root" $ "group" <ray.head or experiments.<name> values>)
*/}}
{{- define "crossfed.rayEnv" -}}
{{- $root := .root -}}
{{- $group := .group | default dict -}}
- name: RAY_AUTH_MODE
  value: token
- name: RAY_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "crossfed.rayTokenSecret" $root }}
      key: auth_token
{{ include "crossfed.scratchEnv" $root }}
{{- if $root.Values.mlflow.enabled }}
- name: MLFLOW_TRACKING_URI
  value: {{ include "crossfed.mlflowUrl" $root }}
- name: MLFLOW_TRACKING_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ include "crossfed.mlflowJobUserSecret" $root }}, key: username}
- name: MLFLOW_TRACKING_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "crossfed.mlflowJobUserSecret" $root }}, key: password}
{{- end }}
{{- if $root.Values.runStorage.enabled }}
{{- $store := include "crossfed.s3Store" $root | fromJson }}
- name: CROSSFED_STORAGE
  value: {{ include "crossfed.runStorageUri" $root | quote }}
{{- with ($root.Values.runStorage.endpoint | default $store.endpoint) }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- $secret := $group.runStorageSecret | default $root.Values.runStorage.existingSecret }}
{{- if $secret }}
{{ include "crossfed.awsCredentialsEnv" (dict "secret" $secret "idKey" "AWS_ACCESS_KEY_ID" "secretKey" "AWS_SECRET_ACCESS_KEY") }}
{{- else if $store.secret }}
{{ include "crossfed.awsCredentialsEnv" $store }}
{{- end }}
{{- end }}
{{- with $root.Values.ray.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- with $group.env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
A Ray container's and pod's own additions: (dict "root" $ "group" <values>) -> envFrom + volumeMounts
for the container, and volumes for the pod.
*/}}
{{- define "crossfed.rayMounts" -}}
{{- with .group.envFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumeMounts:
  {{- include "crossfed.scratchMount" .root | nindent 2 }}
  {{- with .group.volumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{- define "crossfed.rayVolumes" -}}
volumes:
  {{- include "crossfed.scratchVolume" .root | nindent 2 }}
  {{- with .group.volumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* Pod metadata of a Ray group: selector labels, component, the group's own labels and annotations. */}}
{{- define "crossfed.rayPodMetadata" -}}
labels:
  {{- include "crossfed.selectorLabels" .root | nindent 2 }}
  app.kubernetes.io/component: {{ .component }}
  {{- with .experiment }}
  crossfed.io/experiment: {{ . }}
  {{- end }}
  {{- with .group.labels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .group.annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A list of words joined into one shell command line, quoted as Python's shlex.join quotes them. */}}
{{- define "crossfed.shellJoin" -}}
{{- $words := list -}}
{{- range . -}}
{{- $word := toString . -}}
{{- if regexMatch "^[A-Za-z0-9_@%+=:,./-]+$" $word -}}
{{- $words = append $words $word -}}
{{- else -}}
{{- $words = append $words (printf "'%s'" (replace "'" "'\"'\"'" $word)) -}}
{{- end -}}
{{- end -}}
{{- join " " $words -}}
{{- end -}}

{{/*
MLflow's backend store. The URL names host, port, database and user only: libpq takes the password from
PGPASSWORD (a secretKeyRef), so it is never in a URL, a file or a command line, and needs no escaping.
*/}}
{{- define "crossfed.databaseUri" -}}
{{- if .Values.postgresql.enabled -}}
postgresql://{{ .Values.postgresql.username }}@{{ include "crossfed.fullname" . }}-postgresql:5432/{{ .Values.postgresql.database }}
{{- else -}}
{{- $db := .Values.mlflow.externalDatabase -}}
{{- if not (and $db.host $db.existingSecret) -}}
{{- fail "MLflow needs a backend store: enable postgresql, or set mlflow.externalDatabase.host and mlflow.externalDatabase.existingSecret (a Secret holding the database password)" -}}
{{- end -}}
postgresql://{{ $db.username }}@{{ $db.host }}:{{ $db.port }}/{{ $db.database }}
{{- end -}}
{{- end -}}

{{- define "crossfed.databaseEnv" -}}
- name: PGPASSWORD
  valueFrom:
    {{- if .Values.postgresql.enabled }}
    secretKeyRef: {name: {{ include "crossfed.postgresqlSecret" . }}, key: password}
    {{- else }}
    secretKeyRef: {name: {{ .Values.mlflow.externalDatabase.existingSecret }}, key: {{ .Values.mlflow.externalDatabase.passwordKey }}}
    {{- end }}
{{- if and (not .Values.postgresql.enabled) .Values.mlflow.externalDatabase.sslmode }}
- name: PGSSLMODE
  value: {{ .Values.mlflow.externalDatabase.sslmode | quote }}
{{- end }}
- name: MLFLOW_BACKEND_STORE_URI
  value: {{ include "crossfed.databaseUri" . | quote }}
{{- end -}}

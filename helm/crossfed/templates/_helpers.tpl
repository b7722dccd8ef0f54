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

{{/* Secret names: the user's existing Secret, or the one the chart creates from values. */}}
{{- define "crossfed.rayTokenSecret" -}}
{{- if .Values.ray.auth.existingSecret -}}{{ .Values.ray.auth.existingSecret }}
{{- else if .Values.ray.auth.token -}}{{ include "crossfed.fullname" . }}-ray-token
{{- else -}}{{ fail "Ray token authentication needs a token: set ray.auth.existingSecret (a Secret with key auth_token) or ray.auth.token" }}
{{- end -}}
{{- end -}}

{{- define "crossfed.mlflowAdminSecret" -}}
{{- if .Values.mlflow.auth.existingSecret -}}{{ .Values.mlflow.auth.existingSecret }}
{{- else if and .Values.mlflow.auth.adminUsername .Values.mlflow.auth.adminPassword -}}{{ include "crossfed.fullname" . }}-mlflow-admin
{{- else -}}{{ fail "MLflow authentication needs admin credentials: set mlflow.auth.existingSecret (a Secret with keys username and password) or both mlflow.auth.adminUsername and mlflow.auth.adminPassword" }}
{{- end -}}
{{- end -}}

{{- define "crossfed.postgresqlSecret" -}}
{{- if .Values.postgresql.auth.existingSecret -}}{{ .Values.postgresql.auth.existingSecret }}
{{- else if .Values.postgresql.auth.password -}}{{ include "crossfed.fullname" . }}-postgresql
{{- else -}}{{ fail "the bundled PostgreSQL needs a password: set postgresql.auth.existingSecret (a Secret with key password) or postgresql.auth.password, or disable it and set mlflow.externalDatabase.existingSecret" }}
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

{{/* Environment shared by every Ray container: token auth, and the MLflow server with its credentials. */}}
{{- define "crossfed.rayEnv" -}}
- name: RAY_AUTH_MODE
  value: token
- name: RAY_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "crossfed.rayTokenSecret" . }}
      key: {{ .Values.ray.auth.secretKey }}
{{- if .Values.mlflow.enabled }}
- name: MLFLOW_TRACKING_URI
  value: {{ include "crossfed.mlflowUrl" . }}
- name: MLFLOW_TRACKING_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ include "crossfed.mlflowAdminSecret" . }}
      key: username
- name: MLFLOW_TRACKING_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "crossfed.mlflowAdminSecret" . }}
      key: password
{{- end }}
{{ include "crossfed.storageEnv" . }}
{{- with .Values.ray.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The run config mounted into Ray pods when the RayJob is enabled. */}}
{{- define "crossfed.runConfigVolume" -}}
{{- if .Values.rayJob.enabled }}
volumes:
  - name: run-config
    configMap:
      name: {{ include "crossfed.fullname" . }}-run-config
{{- end }}
{{- end -}}

{{- define "crossfed.runConfigMount" -}}
{{- if .Values.rayJob.enabled }}
volumeMounts:
  - name: run-config
    mountPath: /etc/crossfed
    readOnly: true
{{- end }}
{{- end -}}

{{/* S3 credentials and endpoint of the artifact store: (dict "root" $ "endpoint" <url or "">) */}}
{{- define "crossfed.mlflowS3Env" -}}
{{- $root := .root -}}
{{- if .endpoint }}
- name: MLFLOW_S3_ENDPOINT_URL
  value: {{ .endpoint | quote }}
{{- end }}
{{- if $root.Values.minio.enabled }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ include "crossfed.minioSecret" $root }}, key: rootUser}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ include "crossfed.minioSecret" $root }}, key: rootPassword}
{{- else }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ $root.Values.mlflow.artifacts.existingSecret }}, key: AWS_ACCESS_KEY_ID}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ $root.Values.mlflow.artifacts.existingSecret }}, key: AWS_SECRET_ACCESS_KEY}
{{- end }}
{{- end -}}

{{/* The run storage in every Ray container: CROSSFED_STORAGE, its S3 endpoint and credentials. Nodes
share no disk, so without an S3 location a run could neither retry a round nor resume: refuse. */}}
{{- define "crossfed.storageEnv" -}}
{{- $storage := .Values.storage -}}
{{- if $storage.uri }}
- name: CROSSFED_STORAGE
  value: {{ $storage.uri | quote }}
{{- if $storage.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ $storage.endpoint | quote }}
{{- end }}
{{- with $storage.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: AWS_ACCESS_KEY_ID}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ . }}, key: AWS_SECRET_ACCESS_KEY}
{{- end }}
{{- else if .Values.mlflow.enabled }}
{{- $bucket := ternary .Values.minio.bucket .Values.mlflow.artifacts.bucket .Values.minio.enabled }}
{{- $endpoint := ternary (printf "http://%s-minio:9000" (include "crossfed.fullname" .)) .Values.mlflow.artifacts.endpoint .Values.minio.enabled }}
- name: CROSSFED_STORAGE
  value: {{ printf "s3://%s/%s" $bucket $storage.prefix | quote }}
{{- if $endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ $endpoint | quote }}
{{- end }}
{{- include "crossfed.mlflowS3Env" (dict "root" . "endpoint" "") }}
{{- else }}
{{- fail "storage: Ray pods share no disk, so runs need an S3 location: set storage.uri (and storage.endpoint, storage.existingSecret), or enable mlflow with its S3 artifact store" }}
{{- end }}
{{- end -}}

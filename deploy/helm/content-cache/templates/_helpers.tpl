{{/* Names and labels. */}}
{{- define "content-cache.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "content-cache.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "content-cache.selectorLabels" -}}
app.kubernetes.io/name: {{ include "content-cache.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: cache
{{- end -}}

{{- define "content-cache.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "content-cache.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "content-cache.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "content-cache.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "content-cache.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret holding http.secret, or "" when the pods need none. */}}
{{- define "content-cache.httpSecretName" -}}
{{- if .Values.httpSecret.existingSecret -}}
{{- .Values.httpSecret.existingSecret -}}
{{- else if or .Values.httpSecret.value (eq .Values.mode "replicated") -}}
{{- printf "%s-http-secret" (include "content-cache.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Redis' address: the external one or the bundled one. */}}
{{- define "content-cache.redisAddr" -}}
{{- if .Values.redis.bundled.enabled -}}
{{- printf "%s-redis:6379" (include "content-cache.fullname" .) -}}
{{- else -}}
{{- .Values.redis.addr -}}
{{- end -}}
{{- end -}}

{{/* Checks of the values that would make a broken release. */}}
{{- define "content-cache.validate" -}}
{{- if not (has .Values.mode (list "single" "replicated" "nodelocal")) -}}
{{- fail (printf "mode: found %q, expected single, replicated or nodelocal" .Values.mode) -}}
{{- end -}}
{{- if not .Values.cache.upstreams -}}
{{- fail "cache.upstreams: required (the origin registry, e.g. [{originhost: https://registry.example.com}])" -}}
{{- end -}}
{{- if eq .Values.mode "replicated" -}}
{{- if not .Values.storage.object -}}
{{- fail "storage.object: required in mode replicated (the replicas share an object store, e.g. {s3: {...}})" -}}
{{- end -}}
{{- if and (not .Values.redis.addr) (not .Values.redis.bundled.enabled) -}}
{{- fail "redis: mode replicated needs redis.addr or redis.bundled.enabled" -}}
{{- end -}}
{{- if and .Values.redis.addr .Values.redis.bundled.enabled -}}
{{- fail "redis: set redis.addr or redis.bundled.enabled, not both" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* config.yml: distribution's configuration with the downstream block. */}}
{{- define "content-cache.config" -}}
{{- $storage := dict "delete" (dict "enabled" true) -}}
{{- if .Values.storage.object -}}
{{- $storage = merge $storage (deepCopy .Values.storage.object) -}}
{{- else -}}
{{- $_ := set $storage "filesystem" (dict "rootdirectory" "/var/lib/registry") -}}
{{- end -}}
{{- $http := dict "addr" (printf ":%d" (int .Values.port)) -}}
{{- $_ := set $http "debug" (dict "addr" (printf ":%d" (int .Values.debugPort)) "prometheus" (dict "enabled" true "path" "/metrics")) -}}
{{- if .Values.tls.secretName -}}
{{- $_ := set $http "tls" (dict "certificate" "/etc/content-cache/tls/tls.crt" "key" "/etc/content-cache/tls/tls.key") -}}
{{- end -}}
{{- $opts := deepCopy .Values.cache.options -}}
{{- $_ := set $opts "upstreams" .Values.cache.upstreams -}}
{{- if .Values.cache.blobttl -}}
{{- $_ := set $opts "blobttl" .Values.cache.blobttl -}}
{{- end -}}
{{- if .Values.cache.caBundle.keys -}}
{{- $cas := list -}}
{{- range .Values.cache.caBundle.keys -}}
{{- $cas = append $cas (printf "/etc/content-cache/cas/%s" .) -}}
{{- end -}}
{{- $_ := set $opts "cas" $cas -}}
{{- end -}}
{{- if eq .Values.mode "replicated" -}}
{{- $redis := dict "addr" (include "content-cache.redisAddr" .) "db" (int .Values.redis.db) "keyprefix" .Values.redis.keyprefix -}}
{{- if .Values.redis.passwordSecret -}}
{{- $_ := set $redis "passwordfile" "/etc/content-cache/redis/password" -}}
{{- end -}}
{{- if .Values.redis.tlsCASecret -}}
{{- $_ := set $redis "tls" (dict "ca" "/etc/content-cache/redis-tls/ca.crt") -}}
{{- end -}}
{{- $_ := set $opts "redis" $redis -}}
{{- if .advertise -}}
{{- $_ := set $opts "advertise" .advertise -}}
{{- end -}}
{{- end -}}
{{- $cfg := dict "version" "0.1" "storage" $storage "http" $http -}}
{{- $_ := set $cfg "middleware" (dict "registry" (list (dict "name" "downstream" "options" $opts))) -}}
{{- $cfg = mergeOverwrite $cfg (deepCopy .Values.config) -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* The pod template shared by the StatefulSet, Deployment and DaemonSet. */}}
{{- define "content-cache.podTemplate" -}}
{{- $nodeLocal := eq .Values.mode "nodelocal" -}}
{{- $scheme := ternary "HTTPS" "HTTP" (not (empty .Values.tls.secretName)) -}}
metadata:
  labels:
    {{- include "content-cache.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "content-cache.config" . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "content-cache.serviceAccountName" . }}
  automountServiceAccountToken: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  {{- if and $nodeLocal .Values.nodeLocal.hostNetwork }}
  hostNetwork: true
  dnsPolicy: ClusterFirstWithHostNet
  {{- end }}
  {{- if and $nodeLocal .Values.nodeLocal.installHostsToml.enabled }}
  initContainers:
    - name: install-hosts-toml
      image: {{ printf "%s:%s" .Values.nodeLocal.installHostsToml.image.repository .Values.nodeLocal.installHostsToml.image.tag }}
      imagePullPolicy: {{ .Values.nodeLocal.installHostsToml.image.pullPolicy }}
      command:
        - sh
        - -ec
        - |
          {{- range $i, $reg := .Values.nodeLocal.registries }}
          mkdir -p /certs.d/{{ $reg }}
          cp /hosts/hosts-{{ $i }}.toml /certs.d/{{ $reg }}/hosts.toml
          {{- end }}
      securityContext:
        runAsNonRoot: false
        runAsUser: 0
        readOnlyRootFilesystem: true
        allowPrivilegeEscalation: false
        capabilities:
          drop: [ALL]
      volumeMounts:
        - name: hosts-toml
          mountPath: /hosts
          readOnly: true
        - name: certs-d
          mountPath: /certs.d
  {{- end }}
  containers:
    - name: content-cache
      image: {{ include "content-cache.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      {{- if eq .Values.mode "replicated" }}
      # This replica's own config.yml (its advertise address).
      args: ["/etc/content-cache/conf/$(POD_NAME).yml"]
      {{- else }}
      args: ["/etc/content-cache/conf/config.yml"]
      {{- end }}
      ports:
        - name: http
          containerPort: {{ .Values.port }}
          protocol: TCP
          {{- if and $nodeLocal (not .Values.nodeLocal.hostNetwork) }}
          hostPort: {{ .Values.nodeLocal.hostPort }}
          {{- end }}
        - name: debug
          containerPort: {{ .Values.debugPort }}
          protocol: TCP
      env:
        {{- if eq .Values.mode "replicated" }}
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- end }}
        {{- if include "content-cache.httpSecretName" . }}
        - name: REGISTRY_HTTP_SECRET
          valueFrom:
            secretKeyRef:
              name: {{ include "content-cache.httpSecretName" . }}
              key: secret
        {{- end }}
        {{- with .Values.env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      # Ready while some upstream answers: distribution's health gate on /
      # (503 when the downstream_upstreams check fails).
      readinessProbe:
        httpGet:
          path: /
          port: http
          scheme: {{ $scheme }}
        periodSeconds: 10
        failureThreshold: 3
      # Alive while it accepts connections: a lost upstream is no reason to
      # restart a cache that still serves its hits.
      livenessProbe:
        tcpSocket:
          port: http
        periodSeconds: 20
        failureThreshold: 3
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/content-cache/conf
          readOnly: true
        - name: data
          mountPath: /var/lib/registry
        - name: tmp
          mountPath: /tmp
        {{- if .Values.tls.secretName }}
        - name: tls
          mountPath: /etc/content-cache/tls
          readOnly: true
        {{- end }}
        {{- if or .Values.cache.caBundle.secretName .Values.cache.caBundle.configMapName }}
        - name: cas
          mountPath: /etc/content-cache/cas
          readOnly: true
        {{- end }}
        {{- if and (eq .Values.mode "replicated") .Values.redis.passwordSecret }}
        - name: redis-password
          mountPath: /etc/content-cache/redis
          readOnly: true
        {{- end }}
        {{- if and (eq .Values.mode "replicated") .Values.redis.tlsCASecret }}
        - name: redis-tls
          mountPath: /etc/content-cache/redis-tls
          readOnly: true
        {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if .Values.affinity }}
  affinity:
    {{- toYaml .Values.affinity | nindent 4 }}
  {{- else if eq .Values.mode "replicated" }}
  # Replicas on different nodes when the cluster has them.
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels:
                {{- include "content-cache.selectorLabels" . | nindent 16 }}
  {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "content-cache.fullname" . }}
    - name: tmp
      emptyDir: {}
    {{- if $nodeLocal }}
    {{- if .Values.storage.hostPath }}
    # Must be writable by uid 65532: prepare it on the nodes.
    - name: data
      hostPath:
        path: {{ .Values.storage.hostPath }}
        type: Directory
    {{- else }}
    - name: data
      emptyDir: {}
    {{- end }}
    {{- if .Values.nodeLocal.installHostsToml.enabled }}
    - name: hosts-toml
      configMap:
        name: {{ include "content-cache.fullname" . }}-hosts-toml
    - name: certs-d
      hostPath:
        path: {{ .Values.nodeLocal.installHostsToml.certsDir }}
        type: DirectoryOrCreate
    {{- end }}
    {{- else if or .Values.storage.object (not .Values.storage.persistence.enabled) }}
    - name: data
      emptyDir: {}
    {{- end }}
    {{- if .Values.tls.secretName }}
    - name: tls
      secret:
        secretName: {{ .Values.tls.secretName }}
    {{- end }}
    {{- if .Values.cache.caBundle.secretName }}
    - name: cas
      secret:
        secretName: {{ .Values.cache.caBundle.secretName }}
    {{- else if .Values.cache.caBundle.configMapName }}
    - name: cas
      configMap:
        name: {{ .Values.cache.caBundle.configMapName }}
    {{- end }}
    {{- if and (eq .Values.mode "replicated") .Values.redis.passwordSecret }}
    - name: redis-password
      secret:
        secretName: {{ .Values.redis.passwordSecret }}
    {{- end }}
    {{- if and (eq .Values.mode "replicated") .Values.redis.tlsCASecret }}
    - name: redis-tls
      secret:
        secretName: {{ .Values.redis.tlsCASecret }}
    {{- end }}
{{- end -}}

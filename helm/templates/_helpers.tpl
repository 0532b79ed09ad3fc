{{/* Chart name, truncated for label values. */}}
{{- define "jumpstarter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every object name: short enough for "<prefix>-router-NN-tls". */}}
{{- define "jumpstarter.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "jumpstarter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jumpstarter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "jumpstarter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "jumpstarter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: jumpstarter
{{- end -}}

{{/* The image reference: repository:tag, repository@digest, or repository:tag@digest
     (a digest with an explicit tag keeps the tag for readers; the digest decides). */}}
{{- define "jumpstarter.image" -}}
{{- $img := .Values.image -}}
{{- $repo := required "image.repository is required: build the image from this repository's Dockerfile, push it to your registry and set image.repository (see the chart README)" $img.repository -}}
{{- if and $img.digest (not $img.tag) -}}
{{- printf "%s@%s" $repo $img.digest -}}
{{- else if $img.digest -}}
{{- printf "%s:%s@%s" $repo $img.tag $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* Pod labels: the selector labels (.selector) merged over the user's podLabels (.labels),
     so a user label can never change which pods a Deployment or Service selects. */}}
{{- define "jumpstarter.podLabels" -}}
{{- toYaml (merge (deepCopy .selector) (default dict .labels)) -}}
{{- end -}}

{{/* topologySpreadConstraints (.constraints); one without a labelSelector gets the
     component's pods (.selector), so `values-ha.yaml` needs no release name. */}}
{{- define "jumpstarter.topologySpread" -}}
{{- range .constraints }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $.selector) }}
{{- end }}
- {{ toYaml $c | nindent 2 | trim }}
{{- end }}
{{- end -}}

{{- define "jumpstarter.controllerName" -}}
{{- printf "%s-controller" (include "jumpstarter.fullname" .) -}}
{{- end -}}

{{- define "jumpstarter.routerSaName" -}}
{{- printf "%s-router" (include "jumpstarter.fullname" .) -}}
{{- end -}}

{{- define "jumpstarter.dashboardSecretName" -}}
{{- .Values.controller.dashboard.existingSecret | default (printf "%s-dashboard" (include "jumpstarter.fullname" .)) -}}
{{- end -}}

{{- define "jumpstarter.caSecretName" -}}
{{- printf "%s-ca" (include "jumpstarter.fullname" .) -}}
{{- end -}}

{{/* The advertised controller endpoint, host:port. */}}
{{- define "jumpstarter.controllerEndpoint" -}}
{{- $c := .Values.controller -}}
{{- if $c.grpc.endpoint -}}
{{- $c.grpc.endpoint -}}
{{- else if $c.ingress.enabled -}}
{{- printf "%s:443" (required "controller.ingress.host is required when the Ingress is enabled" $c.ingress.host) -}}
{{- else if $c.route.enabled -}}
{{- printf "%s:443" (required "controller.route.host is required when the Route is enabled" $c.route.host) -}}
{{- else -}}
{{- printf "%s.%s.svc:%d" (include "jumpstarter.controllerName" .) .Release.Namespace (int $c.service.port) -}}
{{- end -}}
{{- end -}}

{{/* Name of router replica .index: dict "root" $ "index" i. */}}
{{- define "jumpstarter.routerName" -}}
{{- printf "%s-router-%d" (include "jumpstarter.fullname" .root) (int .index) -}}
{{- end -}}

{{/* Advertised host of router replica .index. */}}
{{- define "jumpstarter.routerHost" -}}
{{- $root := .root -}}
{{- $i := int .index -}}
{{- $e := $root.Values.routers.exposure -}}
{{- if eq $e.type "ClusterIP" -}}
{{- printf "%s.%s.svc" (include "jumpstarter.routerName" .) $root.Release.Namespace -}}
{{- else if eq $e.type "NodePort" -}}
{{- required "routers.exposure.nodePort.host (an address of any node) is required for NodePort" $e.nodePort.host -}}
{{- else if lt $i (len $e.hosts) -}}
{{- index $e.hosts $i -}}
{{- else if $e.hostTemplate -}}
{{- tpl $e.hostTemplate (dict "index" $i "Release" $root.Release "Template" $root.Template) -}}
{{- else if and (eq $e.type "HostPort") (lt $i (len $e.hostPort.nodeNames)) -}}
{{- index $e.hostPort.nodeNames $i -}}
{{- else -}}
{{- fail (printf "routers.exposure: no advertised host for router %d; set hosts[%d] or hostTemplate" $i $i) -}}
{{- end -}}
{{- end -}}

{{/* Advertised port (TCP and UDP) of router replica .index. */}}
{{- define "jumpstarter.routerPort" -}}
{{- $e := .root.Values.routers.exposure -}}
{{- if eq $e.type "NodePort" -}}
{{- add (int $e.nodePort.base) (int .index) -}}
{{- else -}}
{{- int $e.port -}}
{{- end -}}
{{- end -}}

{{/* The controller's --router value of replica .index. */}}
{{- define "jumpstarter.routerFlag" -}}
{{- $endpoint := printf "%s:%s" (include "jumpstarter.routerHost" .) (include "jumpstarter.routerPort" .) -}}
{{- printf "%s=%s" (include "jumpstarter.routerName" .) $endpoint -}}
{{- if .root.Values.routers.quic.enabled -}};quic={{ $endpoint }}{{- end -}}
{{- end -}}

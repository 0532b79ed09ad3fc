# shellcheck shell=bash
# The single-node cluster of the test environment, sourced by testenv.sh (which sets $dir,
# $bin, $here, say, die, stop_pid and free_port). A real node: containerd with runc and the
# CNI bridge from Debian's packages, and kubelet, kube-proxy, kube-scheduler and
# kube-controller-manager built from the same k8s.io/kubernetes pin as kube-apiserver.
#
# What it changes on the machine, all undone by node_stop:
# - a bridge ($NODE_BRIDGE) holding the node address and the pod range;
# - an nftables table ($NODE_NFT_TABLE) that keeps the API server and kubelet ports to
#   loopback and the bridge, and pod traffic on the bridge (nothing leaves the machine);
# - sysctls ip_forward and route_localnet (NodePorts on 127.0.0.1), restored afterwards;
# - kube-proxy's and kubelet's iptables chains (`kube-proxy --cleanup`, then the iptables
#   tables that did not exist before the node started);
# - the pods' network namespaces, mounts and cgroups.
# Every node process runs as root (containerd and kubelet need it), with its own state
# under $dir/node, and is stopped by the PID recorded at start.

NODE_NAME=jumpstarter-node
# The node address: the gateway of the pod bridge. Pods reach the API server and the host
# through it; kubelet serves on it.
NODE_IP=10.211.0.1
NODE_POD_CIDR=10.211.0.0/24
NODE_SERVICE_CIDR=10.0.0.0/24
NODE_BRIDGE=jsnode0
NODE_NFT_TABLE=jumpstarter_node
NODE_PAUSE_IMAGE=localhost/jumpstarter-pause:2
# kubelet's port is fixed (the API server dials the node's address on it); one node per
# machine, like the bridge and the nftables table.
NODE_KUBELET_PORT=10250
# A cold node (first pods, image unpack) on 2 busy cores: minutes are possible.
NODE_READY_TIMEOUT_S=180
NODE_PACKAGES="containerd runc containernetworking-plugins buildah iptables conntrack busybox-static"

node_paths() {
  nd="$dir/node"
  node_sock="$nd/containerd/containerd.sock"
}

# Fails early, with the package to install, when a part of the node is missing.
node_preflight() {
  local missing="" b
  [ "$(id -u)" = 0 ] || die "the node needs root (containerd, kubelet, network setup)"
  for b in containerd ctr runc iptables conntrack buildah busybox nft ip; do
    command -v "$b" >/dev/null || missing="$missing $b"
  done
  [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/portmap ] \
    && [ -x /usr/lib/cni/loopback ] || missing="$missing cni-plugins"
  [ -z "$missing" ] || die "missing for the node:$missing (Debian packages: $NODE_PACKAGES)"
  for b in kubelet kube-proxy kube-scheduler kube-controller-manager kubectl; do
    [ -x "$bin/$b" ] || die "$bin/$b not found; build it with tools/k8s-testenv/build-bins.sh"
  done
  # Pod -> Service -> pod on the same bridge: replies must pass iptables (br_netfilter).
  if ! [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
    modprobe br_netfilter 2>/dev/null || true
    [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] \
      || die "the kernel module br_netfilter is not loaded (and modprobe br_netfilter failed); Services between pods on the node's bridge need it"
  fi
  if ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    die "$NODE_BRIDGE already exists: another test node runs on this machine (stop it with its testenv.sh stop)"
  fi
}

node_sysctl_set() { # key value
  local cur
  cur="$(sysctl -n "$1")"
  echo "$1=$cur" >> "$nd/sysctl.saved"
  sysctl -qw "$1=$2"
}

# Before the API server starts: it advertises the node address, which must exist.
node_network_up() { # api-port
  node_paths
  mkdir -p "$nd"
  : > "$nd/sysctl.saved"
  nft list tables > "$nd/nft-tables.before"
  ip link add "$NODE_BRIDGE" type bridge
  ip addr add "$NODE_IP/24" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  touch "$nd/bridge.created"
  node_sysctl_set net.ipv4.ip_forward 1
  node_sysctl_set net.ipv4.conf.all.route_localnet 1
  node_sysctl_set net.bridge.bridge-nf-call-iptables 1
  nft -f - <<NFT
table inet $NODE_NFT_TABLE {
  chain input {
    type filter hook input priority filter; policy accept;
    # The API server listens on every address (its pods must reach it) and kubelet on the
    # node address: only loopback and the node's bridge may connect.
    tcp dport { $1, $NODE_KUBELET_PORT } iifname != { "lo", "$NODE_BRIDGE" } drop
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    # Pods talk to each other and to this machine, never beyond it.
    iifname "$NODE_BRIDGE" oifname != "$NODE_BRIDGE" drop
    oifname "$NODE_BRIDGE" iifname != "$NODE_BRIDGE" drop
  }
}
NFT
  touch "$nd/nft.created"
}

node_wait() { # what seconds command...
  local what="$1" secs="$2" i
  shift 2
  for i in $(seq 1 $((secs * 2))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  return 1
}

node_alive() { # name
  [ -f "$nd/$1.pid" ] && kill -0 "$(cat "$nd/$1.pid")" 2>/dev/null
}

node_spawn() { # name command...
  local name="$1"
  shift
  "$@" > "$nd/$name.log" 2>&1 9>&- &
  echo $! > "$nd/$name.pid"
}

node_kubectl() {
  "$bin/kubectl" --kubeconfig "$dir/admin.kubeconfig" "$@"
}

# The pod sandbox image: busybox's sleep, the only process of every pod's sandbox. Built
# with buildah once and cached next to the binaries as an OCI archive.
node_pause_image() {
  local tar="$bin/pause-image.oci.tar" stamp="$bin/pause-image.version" want
  want="$NODE_PAUSE_IMAGE $(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo unknown)"
  if ! [ -f "$tar" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "building the pod sandbox image $NODE_PAUSE_IMAGE with buildah"
    local ctr_id
    ctr_id="$(buildah from scratch)"
    # busybox picks its applet by argv[0]: keep its name.
    buildah copy "$ctr_id" "$(command -v busybox)" /busybox >/dev/null
    buildah config --entrypoint '["/busybox", "sleep", "2147483647"]' --user 65535:65535 "$ctr_id"
    buildah commit -q "$ctr_id" "$NODE_PAUSE_IMAGE" >/dev/null
    buildah rm "$ctr_id" >/dev/null
    rm -f "$tar.tmp"
    buildah push -q "$NODE_PAUSE_IMAGE" "oci-archive:$tar.tmp:$NODE_PAUSE_IMAGE" >/dev/null
    mv "$tar.tmp" "$tar"
    echo "$want" > "$stamp"
  fi
  ctr --address "$node_sock" -n k8s.io images import "$tar" >/dev/null
}

node_write_configs() { # api-port
  mkdir -p "$nd/containerd" "$nd/cni/conf" "$nd/cni/ipam" "$nd/kubelet" "$nd/pki"
  cat > "$nd/containerd/config.toml" <<TOML
version = 2
root = "$nd/containerd/root"
state = "$nd/containerd/state"
disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$node_sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$NODE_PAUSE_IMAGE"
  # Root here lacks CAP_SYS_RESOURCE: the sandbox's negative oom_score_adj cannot be set.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$nd/cni/conf"
TOML
  # Masquerading is not needed (pods only talk to the bridge and this machine), so the
  # bridge plugin adds no NAT rules; portmap serves hostPort pods.
  cat > "$nd/cni/conf/10-jumpstarter-node.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "jumpstarter-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$NODE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$nd/cni/ipam",
        "ranges": [[{"subnet": "$NODE_POD_CIDR", "rangeStart": "10.211.0.10", "rangeEnd": "10.211.0.250", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
  (
    cd "$nd/pki"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout kubelet.key -out kubelet.csr \
      -subj "/CN=$NODE_NAME" 2>/dev/null
    printf 'subjectAltName=IP:%s,IP:127.0.0.1,DNS:%s\nextendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n' \
      "$NODE_IP" "$NODE_NAME" > kubelet.ext
    openssl x509 -req -in kubelet.csr -CA "$dir/pki/ca.crt" -CAkey "$dir/pki/ca.key" -CAcreateserial \
      -days 3650 -out kubelet.crt -extfile kubelet.ext 2>/dev/null
  )
  local healthz_port; healthz_port=$(free_port)
  cat > "$nd/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine: cgroup v1 controllers (plus a cgroup2 mount), no systemd, swap allowed.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$node_sock
address: $NODE_IP
port: $NODE_KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz_port
tlsCertFile: $nd/pki/kubelet.crt
tlsPrivateKeyFile: $nd/pki/kubelet.key
# Only the API server (client certificate from the test CA) may call the kubelet API.
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $dir/pki/ca.crt}
authorization: {mode: AlwaysAllow}
enforceNodeAllocatable: []
localStorageCapacityIsolation: false
# A shared test machine: never evict or garbage-collect images for disk pressure.
evictionHard: {memory.available: "100Mi", nodefs.available: "0%", imagefs.available: "0%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: /etc/resolv.conf
registerNode: true
maxPods: 110
serializeImagePulls: false
YAML
  cat > "$nd/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $dir/admin.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $NODE_POD_CIDR
# NodePorts answer on loopback (TCP and UDP, thanks to route_localnet) and on the node
# address only.
nodePortAddresses: ["127.0.0.0/8", "$NODE_IP/32"]
iptables: {localhostNodePorts: true}
healthzBindAddress: 127.0.0.1:$(free_port)
metricsBindAddress: 127.0.0.1:$(free_port)
# Leave the machine's conntrack settings alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
}

node_start() { # api-port
  node_paths
  say "starting the node: containerd"
  node_write_configs "$1"
  node_spawn containerd containerd --config "$nd/containerd/config.toml"
  node_wait containerd 30 ctr --address "$node_sock" version \
    || { tail -20 "$nd/containerd.log" >&2; stop; die "containerd did not start"; }
  node_pause_image || { stop; die "the pod sandbox image could not be built or loaded"; }
  say "starting the node: kubelet, kube-proxy, kube-scheduler, kube-controller-manager"
  local admin="$dir/admin.kubeconfig"
  node_spawn kubelet "$bin/kubelet" --config "$nd/kubelet/config.yaml" --kubeconfig "$admin" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --root-dir "$nd/kubelet" \
    --cert-dir "$nd/kubelet/pki" --v 1
  node_spawn kube-proxy "$bin/kube-proxy" --config "$nd/kube-proxy.yaml" --v 1
  node_spawn kube-scheduler "$bin/kube-scheduler" --kubeconfig "$admin" \
    --authentication-kubeconfig "$admin" --authorization-kubeconfig "$admin" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port "$(free_port)" --v 1
  node_spawn kube-controller-manager "$bin/kube-controller-manager" --kubeconfig "$admin" \
    --authentication-kubeconfig "$admin" --authorization-kubeconfig "$admin" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port "$(free_port)" \
    --root-ca-file "$dir/pki/ca.crt" --service-account-private-key-file "$dir/pki/sa.key" \
    --use-service-account-credentials=false --allocate-node-cidrs=false \
    --service-cluster-ip-range "$NODE_SERVICE_CIDR" --cluster-name jumpstarter-testenv \
    --controllers '*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' --v 1
  local part
  for _ in $(seq 1 $((NODE_READY_TIMEOUT_S * 2))); do
    for part in containerd kubelet kube-proxy kube-scheduler kube-controller-manager; do
      node_alive "$part" || { tail -30 "$nd/$part.log" >&2; stop; die "$part exited"; }
    done
    if node_status; then break; fi
    sleep 0.5
  done
  node_status || { tail -30 "$nd/kubelet.log" >&2; stop; die "the node did not become Ready in ${NODE_READY_TIMEOUT_S}s"; }
  # Pods need their namespace's ServiceAccount and CA bundle, both made by
  # kube-controller-manager.
  node_wait serviceaccount 60 node_kubectl -n default get serviceaccount default \
    || { stop; die "kube-controller-manager did not create the default ServiceAccount"; }
  node_wait root-ca 60 node_kubectl -n default get configmap kube-root-ca.crt \
    || { stop; die "kube-controller-manager did not publish kube-root-ca.crt"; }
  cat >> "$dir/env" <<E
KTE_NODE=1
KTE_NODE_NAME=$NODE_NAME
KTE_NODE_IP=$NODE_IP
KTE_CONTAINERD_ADDRESS=$node_sock
KTE_NODE_LOGS=$nd
E
  say "node $NODE_NAME Ready (address $NODE_IP, containerd $node_sock)"
}

# The node is Ready and its parts run.
node_status() {
  node_paths
  [ -d "$nd" ] && node_alive kubelet && node_alive kube-proxy && node_alive containerd || return 1
  [ "$(node_kubectl get node "$NODE_NAME" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

node_stop() {
  node_paths
  [ -d "$nd" ] || return 0
  say "stopping the node"
  local part
  for part in kubelet kube-scheduler kube-controller-manager; do stop_pid "node/$part"; done
  if node_alive containerd; then
    # Every container and sandbox of the node, killed through the containerd this script
    # started; the sandboxes' network namespaces are collected first.
    local netns id
    # (An app container joins its sandbox's namespace and names none: grep finds nothing
    # there, which must not end the stop.)
    netns="$(for id in $(ctr --address "$node_sock" -n k8s.io containers ls -q 2>/dev/null); do
      ctr --address "$node_sock" -n k8s.io containers info "$id" 2>/dev/null \
        | grep -o '"/var/run/netns/cni-[0-9a-f-]*"' | tr -d '"' || true
    done | sort -u)" || true
    for id in $(ctr --address "$node_sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$node_sock" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    for id in $(ctr --address "$node_sock" -n k8s.io tasks ls -q 2>/dev/null); do
      for _ in $(seq 1 20); do
        ctr --address "$node_sock" -n k8s.io tasks rm -f "$id" >/dev/null 2>&1 && break
        sleep 0.25
      done
    done
    for id in $(ctr --address "$node_sock" -n k8s.io containers ls -q 2>/dev/null); do
      ctr --address "$node_sock" -n k8s.io containers rm "$id" >/dev/null 2>&1 || true
    done
    for id in $netns; do
      umount "$id" 2>/dev/null || true
      rm -f "$id"
    done
  fi
  stop_pid node/containerd
  if [ -f "$nd/kube-proxy.pid" ]; then
    stop_pid node/kube-proxy
    "$bin/kube-proxy" --cleanup --config "$nd/kube-proxy.yaml" >> "$nd/kube-proxy-cleanup.log" 2>&1 || true
  fi
  # Mounts left under the node's state (pod volumes, overlay snapshots, shm), deepest first.
  awk -v p="$nd/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  # The pods' cgroups (cgroupfs driver), now empty.
  find /sys/fs/cgroup -maxdepth 2 -type d -name kubepods 2>/dev/null | while read -r c; do
    find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  if [ -f "$nd/nft.created" ]; then nft delete table inet "$NODE_NFT_TABLE" 2>/dev/null || true; fi
  if [ -f "$nd/bridge.created" ]; then ip link del "$NODE_BRIDGE" 2>/dev/null || true; fi
  # portmap's chains (only present when a pod had a hostPort).
  local chain
  for chain in $(iptables -t nat -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^CNI-(HOSTPORT|DN)-/ { print $2 }'); do
    iptables -t nat -F "$chain" 2>/dev/null || true
  done
  iptables -t nat -S 2>/dev/null | awk '$1 == "-A" && $0 ~ /CNI-HOSTPORT/ { sub(/^-A/, "-D"); print }' \
    | while read -r rule; do eval "iptables -t nat $rule" 2>/dev/null || true; done
  for chain in $(iptables -t nat -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^CNI-(HOSTPORT|DN)-/ { print $2 }'); do
    iptables -t nat -X "$chain" 2>/dev/null || true
  done
  # The iptables(-nft) tables kubelet and kube-proxy created (their KUBE-* chains): the
  # ones that did not exist before the node started.
  if [ -f "$nd/nft-tables.before" ]; then
    nft list tables | while read -r _ family name; do
      case "$family/$name" in ip/filter|ip/nat|ip/mangle|ip6/filter|ip6/nat|ip6/mangle) ;; *) continue ;; esac
      grep -qx "table $family $name" "$nd/nft-tables.before" || nft delete table "$family" "$name" 2>/dev/null || true
    done
  fi
  if [ -f "$nd/sysctl.saved" ]; then
    tac "$nd/sysctl.saved" | while IFS== read -r key value; do sysctl -qw "$key=$value" || true; done
  fi
  rm -rf "$nd"
}

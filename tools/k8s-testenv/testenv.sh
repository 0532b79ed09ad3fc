#!/usr/bin/env bash
# A real Kubernetes control plane for tests: etcd + kube-apiserver on loopback and,
# with --node, a real single-node cluster next to them (containerd + runc, the CNI
# bridge, kubelet, kube-proxy, kube-scheduler, kube-controller-manager). Certificates
# are generated per start; processes are stopped by the PIDs this script recorded
# (never by name).
#
#   tools/k8s-testenv/testenv.sh start [--node]   # (re)start; prints "ready: <dir>"
#   tools/k8s-testenv/testenv.sh ensure [--node]  # start unless already answering
#   tools/k8s-testenv/testenv.sh stop             # stops everything, removes node state
#   tools/k8s-testenv/testenv.sh status           # exit 0 when the API server answers /readyz
#
# The node (see node.sh) lives only on this machine: pods and Services get addresses on
# its own bridge, its API server and kubelet refuse connections from other interfaces,
# and NodePort Services are reachable on 127.0.0.1 (TCP and UDP) and on the node address.
#
# Env:
#   K8S_BIN_DIR  binaries from build-bins.sh (default: the same cache directory)
#   KTE_DIR      state directory (default: <repo>/target/k8s-testenv)
# After start, $KTE_DIR holds admin.kubeconfig (system:masters), controller.kubeconfig
# (an RBAC-only identity: system:serviceaccount:jumpstarter-system:controller),
# env (KEY=VALUE lines) and the logs; with --node also node.kubeconfig-free KTE_NODE_*
# keys (node name and address, containerd socket) and the node's logs under node/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${K8S_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jumpstarter-rs/k8s-bin}"
dir="${KTE_DIR:-$repo/target/k8s-testenv}"

say() { printf '[testenv %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "FATAL: $*"; exit 1; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

stop_pid() { # name
  local f="$dir/$1.pid" pid
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# shellcheck source=node.sh
. "$here/node.sh"

stop() {
  node_stop
  stop_pid kube-apiserver
  stop_pid etcd
}

status() {
  [ -f "$dir/env" ] || return 1
  # shellcheck disable=SC1091
  . "$dir/env"
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --cacert "$dir/pki/ca.crt" \
    -H "Authorization: Bearer ${KTE_ADMIN_TOKEN}" "https://127.0.0.1:${KTE_API_PORT}/readyz" || true)
  [ "$code" = 200 ]
}

ec_req() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "$@" 2>/dev/null; }

make_pki() {
  mkdir -p "$dir/pki"
  (
    cd "$dir/pki"
    ec_req -x509 -days 3650 -keyout ca.key -out ca.crt -subj "/CN=jumpstarter-testenv-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
    ec_req -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver"
    # 10.0.0.1: the `kubernetes` Service (first address of the service range), which pods
    # of the node use; the node address for the same reason.
    printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,IP:%s,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n' "$NODE_IP" > server.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -out apiserver.crt -extfile server.ext 2>/dev/null
    # The API server's identity towards kubelets (kubectl logs/exec).
    ec_req -keyout apiserver-kubelet-client.key -out apiserver-kubelet-client.csr -subj "/O=system:masters/CN=kube-apiserver-kubelet-client"
    printf 'extendedKeyUsage=clientAuth\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n' > client.ext
    openssl x509 -req -in apiserver-kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -out apiserver-kubelet-client.crt -extfile client.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

write_kubeconfig() { # file user token
  cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: https://127.0.0.1:${api_port}
    certificate-authority: $dir/pki/ca.crt
users:
- name: $2
  user:
    token: $3
contexts:
- name: testenv
  context: {cluster: testenv, user: $2, namespace: default}
current-context: testenv
KC
  chmod 600 "$1"
}

start() { # [--node]
  local with_node=""
  [ "${1:-}" = --node ] && with_node=1
  [ -x "$bin/kube-apiserver" ] && [ -x "$bin/etcd" ] \
    || die "kube-apiserver/etcd not found in $bin; build them with tools/k8s-testenv/build-bins.sh"
  command -v openssl >/dev/null || die "openssl is required"
  command -v curl >/dev/null || die "curl is required"
  stop
  rm -rf "$dir"; mkdir -p "$dir"
  if [ -n "$with_node" ]; then node_preflight; fi
  make_pki
  local etcd_port api_port admin_token controller_token
  etcd_port=$(free_port); api_port=$(free_port)
  admin_token=$(openssl rand -hex 24); controller_token=$(openssl rand -hex 24)
  cat > "$dir/tokens.csv" <<T
${admin_token},testenv-admin,uid-admin,"system:masters"
${controller_token},system:serviceaccount:jumpstarter-system:controller,uid-controller,"system:serviceaccounts,system:serviceaccounts:jumpstarter-system"
T
  chmod 600 "$dir/tokens.csv"
  say "starting etcd on 127.0.0.1:${etcd_port}"
  "$bin/etcd" --data-dir "$dir/etcd" --name testenv \
    --listen-client-urls "http://127.0.0.1:${etcd_port}" --advertise-client-urls "http://127.0.0.1:${etcd_port}" \
    --listen-peer-urls "http://127.0.0.1:0" --unsafe-no-fsync \
    > "$dir/etcd.log" 2>&1 9>&- &
  echo $! > "$dir/etcd.pid"
  local ok=""
  for _ in $(seq 1 100); do
    if curl -sf --max-time 1 "http://127.0.0.1:${etcd_port}/health" | grep -q true; then ok=1; break; fi
    kill -0 "$(cat "$dir/etcd.pid")" 2>/dev/null || break
    sleep 0.2
  done
  [ -n "$ok" ] || { tail -20 "$dir/etcd.log" >&2; stop; die "etcd did not become healthy"; }
  # Without a node the API server listens on loopback only. With one, its pods must reach
  # it too (through the `kubernetes` Service, whose endpoint is the advertised address):
  # it listens on every address, and the node's firewall table admits only loopback and
  # the node's bridge (node_network_up).
  local bind=127.0.0.1 advertise=(--advertise-address=127.0.0.1 --endpoint-reconciler-type=none)
  if [ -n "$with_node" ]; then
    node_network_up "$api_port"
    bind=0.0.0.0 advertise=(--advertise-address="$NODE_IP" --endpoint-reconciler-type=lease)
  fi
  say "starting kube-apiserver on ${bind}:${api_port}"
  "$bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:${etcd_port}" \
    --bind-address="$bind" --secure-port="${api_port}" \
    "${advertise[@]}" \
    --kubelet-client-certificate="$dir/pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$dir/pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP \
    --tls-cert-file="$dir/pki/apiserver.crt" --tls-private-key-file="$dir/pki/apiserver.key" \
    --client-ca-file="$dir/pki/ca.crt" --token-auth-file="$dir/tokens.csv" \
    --authorization-mode=RBAC \
    --service-account-issuer="https://127.0.0.1:${api_port}" \
    --service-account-key-file="$dir/pki/sa.pub" --service-account-signing-key-file="$dir/pki/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --allow-privileged=true \
    --enable-priority-and-fairness=false --profiling=false \
    > "$dir/kube-apiserver.log" 2>&1 9>&- &
  echo $! > "$dir/kube-apiserver.pid"
  local code=""
  for _ in $(seq 1 300); do # 300 x 0.5 s: a cold start on 2 busy cores can take a while
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --cacert "$dir/pki/ca.crt" \
      -H "Authorization: Bearer ${admin_token}" "https://127.0.0.1:${api_port}/readyz" || true)
    [ "$code" = 200 ] && break
    kill -0 "$(cat "$dir/kube-apiserver.pid")" 2>/dev/null || { tail -30 "$dir/kube-apiserver.log" >&2; stop; die "kube-apiserver exited"; }
    sleep 0.5
  done
  [ "$code" = 200 ] || { tail -30 "$dir/kube-apiserver.log" >&2; stop; die "kube-apiserver not ready (last /readyz: $code)"; }
  write_kubeconfig "$dir/admin.kubeconfig" testenv-admin "$admin_token"
  write_kubeconfig "$dir/controller.kubeconfig" controller "$controller_token"
  cat > "$dir/env" <<E
KTE_DIR=$dir
KTE_API_PORT=$api_port
KTE_ADMIN_TOKEN=$admin_token
KTE_ADMIN_KUBECONFIG=$dir/admin.kubeconfig
KTE_CONTROLLER_KUBECONFIG=$dir/controller.kubeconfig
KTE_BIN_DIR=$bin
E
  chmod 600 "$dir/env"
  if [ -n "$with_node" ]; then node_start "$api_port"; fi
  say "ready: https://127.0.0.1:${api_port} (kubeconfig $dir/admin.kubeconfig)"
  echo "ready: $dir"
}

mkdir -p "$(dirname "$dir")"
cmd="${1:-}"
case "$cmd" in
  start|stop)
    # One start/stop at a time, also across concurrent test binaries.
    exec 9>"$dir.lock"
    flock 9
    if [ "$cmd" = start ]; then start "${2:-}"; else stop; fi
    ;;
  ensure)
    exec 9>"$dir.lock"
    flock 9
    if status && { [ "${2:-}" != --node ] || node_status; }; then echo "ready: $dir"; else start "${2:-}"; fi
    ;;
  status) status ;;
  *) echo "usage: $0 start [--node]|ensure [--node]|stop|status" >&2; exit 2 ;;
esac

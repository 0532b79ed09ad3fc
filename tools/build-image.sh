#!/usr/bin/env bash
# Builds the service image with buildah from the repository's Dockerfile, without a registry:
# the binaries come from a cargo build on this machine (the Dockerfile's `host-binaries`
# target) and the runtime base is made locally from Debian packages (glibc, libgcc, CA
# certificates; user 65532, no shell). Then loads the image into a containerd (by default the
# test node's, see tools/k8s-testenv) for pods that use it with imagePullPolicy: Never.
#
#   tools/build-image.sh [options]      # prints the image reference on its last line
#
# Run `tools/build-image.sh --help` for the options. Needs root, buildah (Debian package
# buildah), ctr (package containerd) to load, apt-get and dpkg-deb for the base image.
# Env: JUMPSTARTER_IMAGE_PROFILE (default --profile), JUMPSTARTER_BUILDAH_ROOT (buildah storage, default: buildah's own, /var/lib/containers),
#      KTE_DIR (test node's directory; default <repo>/target/k8s-testenv).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

say() { printf '[build-image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "FATAL: $*"; exit 1; }

usage() {
  cat <<'EOF'
Usage: tools/build-image.sh [options]

Builds the jumpstarter service image (controller, router, standalone/admin binaries) with
buildah from the repository's Dockerfile, using binaries built on this machine and a runtime
base image made from Debian packages, then loads it into a containerd. The image reference
(repository:tag) is printed on the last line of stdout; progress goes to stderr.

Options:
  --profile release|dev   cargo profile of the binaries (default: release). `dev` uses
                          target/debug (debug info is stripped when staging).
  --no-build              use the binaries already in the profile's target directory instead
                          of running cargo first (fails if one is missing)
  --tag TAG               image tag (default: <chart appVersion>-<git short sha>, plus
                          `-dev` for the dev profile and `-dirty-<image id>` for a dirty tree)
  --no-load               build only; do not load the image into containerd
  --containerd-address SOCK
                          containerd socket to load into (default: KTE_CONTAINERD_ADDRESS
                          from ${KTE_DIR:-<repo>/target/k8s-testenv}/env, the test node's)
  --self-test             build, then load into a throwaway containerd of its own and run the
                          binaries from the image as user 65532 on a read-only root
                          filesystem; stops that containerd and removes its files afterwards
  -h, --help              this help

The image is localhost/jumpstarter-service:<tag>; the base is
localhost/jumpstarter-base:<os><version> (e.g. debian12), rebuilt only when the versions of its
Debian packages change.
EOF
}

# JUMPSTARTER_IMAGE_PROFILE sets the default profile (the test command uses the dev binaries
# it built already).
profile="${JUMPSTARTER_IMAGE_PROFILE:-release}"
build=1
tag=""
load=1
address=""
self_test=0
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) [ $# -ge 2 ] || die "--profile needs a value (release or dev)"; profile="$2"; shift 2 ;;
    --profile=*) profile="${1#*=}"; shift ;;
    --no-build) build=0; shift ;;
    --tag) [ $# -ge 2 ] || die "--tag needs a value"; tag="$2"; shift 2 ;;
    --tag=*) tag="${1#*=}"; shift ;;
    --no-load) load=0; shift ;;
    --containerd-address) [ $# -ge 2 ] || die "--containerd-address needs a socket path"; address="$2"; shift 2 ;;
    --containerd-address=*) address="${1#*=}"; shift ;;
    --self-test) self_test=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
case "$profile" in
  release) profile_dir=release; cargo_profile=(--release) ;;
  dev) profile_dir=debug; cargo_profile=() ;;
  *) die "--profile must be release or dev, not '$profile'" ;;
esac
if [ -n "$tag" ] && ! [[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; then
  die "--tag '$tag' is not a valid image tag (letters, digits, _ . -; at most 128; not starting with . or -)"
fi
if [ "$self_test" = 1 ] && [ -n "$address" ]; then
  die "--self-test loads into its own containerd; do not combine it with --containerd-address"
fi

# The three binaries the Dockerfile's build stage produces, and where the `host-binaries`
# target takes them from (a path inside the build context; .dockerignore lets it through).
bins=(jumpstarter-controller jumpstarter-router jumpstarter)
stage_dir="$repo/target/image-bin"
image_repo=localhost/jumpstarter-service

[ "$(id -u)" = 0 ] || die "run as root (buildah builds and containerd imports need it)"
command -v buildah >/dev/null || die "buildah is not installed (Debian package: buildah)"
if [ "$load" = 1 ] || [ "$self_test" = 1 ]; then
  command -v ctr >/dev/null || die "ctr is not installed (Debian package: containerd)"
fi
if [ "$self_test" = 1 ]; then
  command -v containerd >/dev/null || die "containerd is not installed (Debian package: containerd)"
  command -v runc >/dev/null || die "runc is not installed (Debian package: runc)"
  [ -x /bin/busybox ] || die "/bin/busybox is missing (Debian package: busybox-static); the self-test mounts it to check the user and the read-only root"
fi
# Where to load, found before any build so a wrong setting fails fast.
if [ "$load" = 1 ] && [ "$self_test" = 0 ]; then
  if [ -z "$address" ]; then
    env_file="${KTE_DIR:-$repo/target/k8s-testenv}/env"
    [ -f "$env_file" ] || die "no --containerd-address and no test node env file at $env_file (start the node: tools/k8s-testenv/testenv.sh start --node; or use --no-load)"
    address="$(sed -n 's/^KTE_CONTAINERD_ADDRESS=//p' "$env_file" | tail -n 1)"
    [ -n "$address" ] || die "$env_file has no KTE_CONTAINERD_ADDRESS (is the node started with --node?)"
  fi
  [ -S "${address#unix://}" ] || die "no containerd socket at ${address#unix://} (is the node's containerd running?)"
fi
buildah_args=()
if [ -n "${JUMPSTARTER_BUILDAH_ROOT:-}" ]; then
  buildah_args=(--root "$JUMPSTARTER_BUILDAH_ROOT/storage" --runroot "$JUMPSTARTER_BUILDAH_ROOT/run")
fi
bh() { buildah "${buildah_args[@]}" "$@"; }

scratch="$(mktemp -d "${TMPDIR:-/tmp}/jumpstarter-image.XXXXXX")"
cleanup() { rm -rf "$scratch"; }
trap cleanup EXIT

# One build at a time per checkout: the staged binaries are shared.
mkdir -p "$stage_dir"
exec 9>"$stage_dir/.lock"
if ! flock -n 9; then
  say "another image build of this checkout is running; waiting for it"
  flock 9
fi

# --- 1. binaries --------------------------------------------------------------------------
command -v cargo >/dev/null || die "cargo is not installed"
target_dir="$(cd "$repo" && cargo metadata --format-version 1 --no-deps 2>/dev/null \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')" || true
[ -n "$target_dir" ] || die "cargo metadata failed in $repo (is the workspace broken?)"
bin_dir="$target_dir/$profile_dir"
if [ "$build" = 1 ]; then
  say "cargo build (${profile}): jumpstarter-controller, jumpstarter-router, jumpstarter-standalone"
  started=$(date +%s)
  (cd "$repo" && cargo build "${cargo_profile[@]}" --locked \
      -p jumpstarter-controller -p jumpstarter-router -p jumpstarter-standalone --bins >&2) \
    || die "cargo build failed (see above)"
  say "cargo build done in $(( $(date +%s) - started ))s"
fi
for b in "${bins[@]}"; do
  [ -x "$bin_dir/$b" ] || die "$bin_dir/$b is missing; build it (drop --no-build, or: cargo build ${cargo_profile[*]} --bins)"
done

# Stage the binaries into the build context, stripped of debug info (a dev build's is most of
# its size). A binary is re-staged only when cargo rewrote it, so an unchanged binary keeps its
# bytes and buildah's layer cache hits.
mkdir -p "$stage_dir"
for b in "${bins[@]}"; do
  if [ ! -f "$stage_dir/$b" ] || [ "$bin_dir/$b" -nt "$stage_dir/$b" ] \
     || [ "$(cat "$stage_dir/.$b.from" 2>/dev/null)" != "$bin_dir/$b" ]; then
    if command -v strip >/dev/null; then
      strip --strip-debug -o "$stage_dir/$b.tmp" "$bin_dir/$b"
    else
      cp "$bin_dir/$b" "$stage_dir/$b.tmp"
    fi
    chmod 0755 "$stage_dir/$b.tmp"
    mv "$stage_dir/$b.tmp" "$stage_dir/$b"
    echo "$bin_dir/$b" > "$stage_dir/.$b.from"
    say "staged $b ($(du -h "$stage_dir/$b" | cut -f1))"
  fi
done
# Only the binaries belong in the image (the .from notes stay out of it: .dockerignore).
for f in "$stage_dir"/*; do
  case " ${bins[*]} " in *" ${f##*/} "*) ;; *) rm -rf "$f" ;; esac
done

# --- 2. runtime base from Debian packages -------------------------------------------------
# glibc and libgcc are what the binaries link (ldd); CA certificates for TLS to services that
# use public roots; netbase for /etc/services and /etc/protocols. The versions are those apt
# would install on this machine, so the base's glibc is never older than the one the binaries
# were linked against.
base_pkgs=(libc6 libgcc-s1 ca-certificates netbase)
# shellcheck source=/dev/null
os_release="$(. /etc/os-release && echo "${ID:-linux}${VERSION_ID:-}")"
base_image="localhost/jumpstarter-base:${os_release%%.*}"
base_label=io.jumpstarter.base.packages
for tool in apt-cache apt-get dpkg-deb dpkg-query; do
  command -v "$tool" >/dev/null || die "$tool is needed to make the base image from Debian packages"
done
pkg_stamp() { # "pkg=version ..." in base_pkgs order, or fails when apt does not know one
  local versions p v out=""
  versions="$(apt-cache show --no-all-versions "${base_pkgs[@]}" 2>/dev/null \
    | awk '/^Package: /{p=$2} /^Version: /{print p "=" $2}')" || true
  for p in "${base_pkgs[@]}"; do
    v="$(grep -m1 "^$p=" <<<"$versions")" || return 1
    out="$out $v"
  done
  echo "${out# }"
}
stamp="$(pkg_stamp)" || {
  say "apt has no package lists; running apt-get update"
  apt-get update -qq >&2 || die "apt-get update failed"
  stamp="$(pkg_stamp)" || die "apt-cache does not know all of: ${base_pkgs[*]}"
}
libc_installed="$(dpkg-query -W -f '${Version}' libc6 2>/dev/null || true)"
libc_base="$(sed -n 's/.*libc6=\([^ ]*\).*/\1/p' <<<"$stamp")"
if [ -n "$libc_installed" ] && dpkg --compare-versions "$libc_installed" gt "$libc_base"; then
  say "WARNING: the installed glibc ($libc_installed) is newer than the one apt offers for the base ($libc_base); binaries linked here may need symbols the base lacks"
fi
have_stamp="$(bh inspect --type image --format "{{index .OCIv1.Config.Labels \"$base_label\"}}" \
  "$base_image" 2>/dev/null || true)"
if [ "$have_stamp" = "$stamp" ]; then
  say "base $base_image: cached ($stamp)"
else
  say "base $base_image: making from Debian packages ($stamp)"
  mkdir -p "$scratch/debs" "$scratch/rootfs"
  # shellcheck disable=SC2086
  (cd "$scratch/debs" && apt-get download -q -o APT::Sandbox::User=root $stamp >&2) \
    || die "apt-get download of the base packages failed: $stamp"
  for deb in "$scratch"/debs/*.deb; do dpkg-deb -x "$deb" "$scratch/rootfs"; done
  r="$scratch/rootfs"
  rm -rf "${r:?}/usr/share/doc" "$r/usr/share/man" "$r/usr/share/info" "$r/usr/share/locale" \
    "$r/usr/share/lintian" "${r:?}/usr/sbin" "${r:?}/usr/bin" "${r:?}/sbin" "${r:?}/bin"
  # What update-ca-certificates would write with every bundled certificate enabled (no
  # maintainer scripts run in an unpacked root).
  mkdir -p "$r/etc/ssl/certs"
  cat "$r"/usr/share/ca-certificates/*/*.crt > "$r/etc/ssl/certs/ca-certificates.crt"
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
    'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' > "$r/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' > "$r/etc/group"
  mkdir -p "$r/tmp" "$r/root" "$r/home/nonroot"
  chmod 1777 "$r/tmp"; chmod 0700 "$r/root" "$r/home/nonroot"
  chown 65532:65532 "$r/home/nonroot"
  ctr_id="$(bh from --quiet scratch)"
  mnt="$(bh mount "$ctr_id")"
  cp -a "$r/." "$mnt/"
  bh umount "$ctr_id" >/dev/null
  bh config --user 65532:65532 --workingdir /home/nonroot \
    --env PATH=/usr/local/bin:/usr/bin:/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --label "$base_label=$stamp" "$ctr_id"
  bh commit --quiet --rm "$ctr_id" "$base_image" >/dev/null
  say "base $base_image: made"
fi

# --- 3. the image, from the repository's Dockerfile ---------------------------------------
if [ -z "$tag" ]; then
  app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$repo/helm/Chart.yaml")"
  [ -n "$app_version" ] || die "no appVersion in helm/Chart.yaml"
  sha="$(git -C "$repo" rev-parse --short=7 HEAD 2>/dev/null || echo nogit)"
  dirty=0
  if [ "$sha" = nogit ] || [ -n "$(git -C "$repo" status --porcelain 2>/dev/null)" ]; then dirty=1; fi
  tag="$app_version-$sha"
  [ "$profile" = dev ] && tag="$tag-dev"
else
  dirty=0
fi
say "building $image_repo from $repo/Dockerfile (target host-binaries, BASE_IMAGE=$base_image)"
started=$(date +%s)
bh bud --layers --pull=never \
  --target host-binaries --build-arg "BASE_IMAGE=$base_image" \
  --iidfile "$scratch/iid" -f "$repo/Dockerfile" "$repo" >&2 \
  || die "buildah bud failed (see above)"
image_id="$(sed 's/^sha256://' "$scratch/iid")"
# A dirty tree's tag also names the image's content, so every rebuilt image gets a new ref.
if [ "$dirty" = 1 ]; then
  tag="$tag-dirty-${image_id:0:12}"
  # Earlier builds of the same dirty tree are superseded: untag them so work in progress does
  # not fill the disk with images (their layers go when no tag holds them).
  bh images --format '{{.Name}}:{{.Tag}}' "$image_repo" 2>/dev/null \
    | grep -F "$image_repo:${tag%-*}-" | grep -vFx "$image_repo:$tag" \
    | while read -r old; do bh rmi "$old" >/dev/null 2>&1 || true; done || true
fi
ref="$image_repo:$tag"
bh tag "$image_id" "$ref"
size="$(bh images --format '{{.Size}}' "$ref" | sed -n 1p)"
say "built $ref (id ${image_id:0:12}, $size) in $(( $(date +%s) - started ))s"

# --- 4. load into containerd --------------------------------------------------------------
load_into() { # socket
  local sock="${1#unix://}" tar="$scratch/image.tar" names
  [ -S "$sock" ] || die "no containerd socket at $sock"
  rm -f "$tar"
  bh push --quiet "$ref" "oci-archive:$tar:$ref" >&2 || die "buildah push to an OCI archive failed"
  timeout 300 ctr --address "$sock" -n k8s.io images import "$tar" >&2 \
    || die "ctr images import into $sock failed (or took over 5 minutes)"
  names="$(timeout 60 ctr --address "$sock" -n k8s.io images ls -q)" \
    || die "ctr images ls on $sock failed"
  grep -Fxq "$ref" <<<"$names" \
    || die "after the import, containerd at $sock has no image named $ref (it has: $(tr '\n' ' ' <<<"$names"))"
  rm -f "$tar"
  say "loaded $ref into containerd at $sock (namespace k8s.io)"
}

if [ "$self_test" = 1 ]; then
  # A containerd of our own (no CRI plugin: plain containers only), stopped by PID on exit.
  d="$scratch/containerd"
  mkdir -p "$d/root" "$d/state"
  cat > "$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd-ttrpc.sock"
[debug]
  address = "$d/debug.sock"
[metrics]
  address = ""
EOF
  containerd --config "$d/config.toml" > "$d/containerd.log" 2>&1 &
  cd_pid=$!
  cleanup() {
    # Shims of containers that did not finish (a timed-out run), then containerd itself.
    for f in "$d"/state/io.containerd.runtime.v2.task/*/*/init.pid \
             "$d"/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
      if [ -f "$f" ]; then kill -9 "$(cat "$f")" 2>/dev/null || true; fi
    done
    if kill -0 "$cd_pid" 2>/dev/null; then
      kill "$cd_pid"; for _ in $(seq 1 50); do kill -0 "$cd_pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$cd_pid" 2>/dev/null || true
    fi
    # Mounts containerd left (snapshots of a container that did not finish), then its files.
    { grep -o " $d/[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
    rm -rf "$scratch"
  }
  for _ in $(seq 1 100); do
    timeout 5 ctr --address "$d/containerd.sock" version >/dev/null 2>&1 && break
    kill -0 "$cd_pid" 2>/dev/null || { cat "$d/containerd.log" >&2; die "the self-test containerd exited"; }
    sleep 0.1
  done
  timeout 5 ctr --address "$d/containerd.sock" version >/dev/null 2>&1 \
    || { tail -n 20 "$d/containerd.log" >&2; die "the self-test containerd did not answer in 10s"; }
  say "self-test: containerd (pid $cd_pid) at $d/containerd.sock"
  load_into "$d/containerd.sock"
  # Runs the image (its own user, read-only root, busybox mounted for the checks that need a
  # tool the image does not have); sets $out and fails unless the exit code is the expected one.
  run() { # container-id expected-exit-code [command...]
    local id="$1" want="$2" got=0; shift 2
    out="$(timeout 60 ctr --address "$d/containerd.sock" -n k8s.io run --rm --read-only \
      --mount type=bind,src=/bin/busybox,dst=/busybox,options=rbind:ro \
      "$ref" "self-test-$id" "$@" 2>&1)" || got=$?
    sed -n 's/^/    | /; p; 6q' <<<"$out" >&2
    [ "$got" = "$want" ] || die "self-test: '${*:-default command}' exited $got, expected $want"
  }
  say "self-test: the image's default command (jumpstarter-controller --help)"
  run default 0
  grep -q '^Usage: jumpstarter-controller' <<<"$out" || die "self-test: the default command printed no controller usage"
  for b in jumpstarter-router jumpstarter; do
    say "self-test: $b --help"
    run "$b" 0 "/usr/local/bin/$b" --help
    grep -q "^Usage: $b" <<<"$out" || die "self-test: $b --help printed no usage"
  done
  say "self-test: runs as 65532:65532"
  run uid 0 /busybox id -u
  [ "$out" = 65532 ] || die "self-test: the container runs as uid '$out', not 65532"
  run gid 0 /busybox id -g
  [ "$out" = 65532 ] || die "self-test: the container runs as gid '$out', not 65532"
  say "self-test: the root filesystem is read-only"
  run readonly 1 /busybox touch /home/nonroot/x
  grep -q 'Read-only file system' <<<"$out" || die "self-test: writing to the root failed for another reason: $out"
  say "self-test: passed"
elif [ "$load" = 1 ]; then
  load_into "$address"
fi

echo "$ref"

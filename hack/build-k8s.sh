#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries the tests and the local cluster
# need, from their Go modules at the versions pinned in hack/tools/*/go.mod, into
# bin/k8s/<version>/. A binary that is already there is not built again.
#
# Usage: hack/build-k8s.sh [binary...]   (default: kube-apiserver etcd)
# Binaries: kube-apiserver etcd kube-controller-manager kube-scheduler kwok helm
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
k8s_version=$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$root/hack/tools/k8s/go.mod")
k8s_version=${k8s_version#v}
[ -n "$k8s_version" ] || { echo "cannot read the k8s.io/kubernetes version from hack/tools/k8s/go.mod" >&2; exit 1; }
out="$root/bin/k8s/$k8s_version"
mkdir -p "$out"

pkg_of() {
  case "$1" in
    kube-apiserver|kube-controller-manager|kube-scheduler) echo "k8s k8s.io/kubernetes/cmd/$1" ;;
    etcd) echo "k8s go.etcd.io/etcd/server/v3" ;;
    kwok) echo "kwok sigs.k8s.io/kwok/cmd/kwok" ;;
    helm) echo "helm helm.sh/helm/v3/cmd/helm" ;;
    *) echo "unknown binary: $1" >&2; return 1 ;;
  esac
}

bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=(kube-apiserver etcd)
for b in "${bins[@]}"; do
  if [ "$b" = kwok ] && [ ! -f "$out/kwok-stages/pod-create.yaml" ]; then
    rm -rf "$out/kwok-stages" "$out/kwok-stages.tmp"
    # kwok's own Stage files (how its fake kubelet moves nodes and pods), from its module.
    dir=$(cd "$root/hack/tools/kwok" && go mod download sigs.k8s.io/kwok && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
    mkdir -p "$out/kwok-stages.tmp"
    for f in node/fast/node-initialize node/heartbeat/node-heartbeat pod/general/pod-create pod/general/pod-ready pod/general/pod-complete \
             pod/general/pod-delete pod/chaos/pod-container-running-failed; do
      cp "$dir/kustomize/stage/$f.yaml" "$out/kwok-stages.tmp/"
    done
    chmod -R u+w "$out/kwok-stages.tmp"
    mv "$out/kwok-stages.tmp" "$out/kwok-stages"
  fi
  if [ -x "$out/$b" ]; then
    continue
  fi
  read -r mod pkg < <(pkg_of "$b")
  echo "Building $b ($pkg) into $out (once; this takes a few minutes)" >&2
  start=$(date +%s)
  ldflags="-s -w"
  if [ "$mod" = k8s ]; then
    # Stamp the version as the Kubernetes release build does, so clients see v$k8s_version.
    ldflags="$ldflags -X k8s.io/component-base/version.gitVersion=v$k8s_version"
    ldflags="$ldflags -X k8s.io/component-base/version.gitMajor=${k8s_version%%.*}"
    minor=${k8s_version#*.}; ldflags="$ldflags -X k8s.io/component-base/version.gitMinor=${minor%%.*}"
    ldflags="$ldflags -X k8s.io/component-base/version.gitTreeState=clean"
  fi
  if [ "$mod" = helm ]; then
    # Stamp what Helm's own Makefile stamps: its version, and the Kubernetes
    # version of its client-go (the default for .Capabilities and lint).
    helm_version=$(awk '$1=="require" && $2=="helm.sh/helm/v3" {print $3; exit} $1=="helm.sh/helm/v3" {print $2; exit}' "$root/hack/tools/helm/go.mod")
    kminor=$(awk '$1=="k8s.io/client-go" {split($2, v, "."); print v[2]; exit}' "$root/hack/tools/helm/go.mod")
    ldflags="$ldflags -X helm.sh/helm/v3/internal/version.version=$helm_version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    for p in pkg/chartutil pkg/lint/rules; do
      ldflags="$ldflags -X helm.sh/helm/v3/$p.k8sVersionMajor=1 -X helm.sh/helm/v3/$p.k8sVersionMinor=$kminor"
    done
  fi
  (cd "$root/hack/tools/$mod" && CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" -o "$out/$b.tmp" "$pkg")
  mv "$out/$b.tmp" "$out/$b"
  echo "Built $b in $(( $(date +%s) - start ))s" >&2
done
echo "$out"

#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries the tests and the local cluster
# need, from their Go modules at the versions pinned in hack/tools/*/go.mod, into
# bin/k8s/<version>/. A binary that is already there is not built again.
#
# Usage: hack/build-k8s.sh [binary...]   (default: kube-apiserver etcd)
# Binaries: kube-apiserver etcd kube-controller-manager kube-scheduler kwok
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
k8s_version=$(awk '$1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$root/hack/tools/k8s/go.mod")
k8s_version=${k8s_version#v}
out="$root/bin/k8s/$k8s_version"
mkdir -p "$out"

pkg_of() {
  case "$1" in
    kube-apiserver|kube-controller-manager|kube-scheduler) echo "k8s k8s.io/kubernetes/cmd/$1" ;;
    etcd) echo "k8s go.etcd.io/etcd/server/v3" ;;
    kwok) echo "kwok sigs.k8s.io/kwok/cmd/kwok" ;;
    *) echo "unknown binary: $1" >&2; return 1 ;;
  esac
}

bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=(kube-apiserver etcd)
for b in "${bins[@]}"; do
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
  (cd "$root/hack/tools/$mod" && CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" -o "$out/$b.tmp" "$pkg")
  mv "$out/$b.tmp" "$out/$b"
  echo "Built $b in $(( $(date +%s) - start ))s" >&2
done
echo "$out"

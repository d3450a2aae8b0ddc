#!/usr/bin/env bash
# Builds kubectl-conveyor release archives for krew and writes the krew plugin
# manifest that points at them, with their sha256 sums.
#
# Usage: hack/krew-release.sh VERSION BASE_URL
#   VERSION   e.g. v0.3.0 (the manifest's spec.version)
#   BASE_URL  where the archives will be published, e.g.
#             https://github.com/conveyor-dev/conveyor/releases/download/v0.3.0
# Output: bin/dist/kubectl-conveyor_<os>_<arch>.tar.gz and bin/dist/conveyor.yaml
# (submit the latter to krew-index, or install it locally with
# `kubectl krew install --manifest=bin/dist/conveyor.yaml`).
set -euo pipefail
version=${1:?usage: hack/krew-release.sh VERSION BASE_URL}
base=${2:?usage: hack/krew-release.sh VERSION BASE_URL}
root=$(cd "$(dirname "$0")/.." && pwd)
dist="$root/bin/dist"
mkdir -p "$dist"
platforms=${PLATFORMS:-"linux/amd64 linux/arm64 darwin/amd64 darwin/arm64"}

{
  cat <<YAML
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: conveyor
spec:
  version: ${version}
  homepage: https://github.com/conveyor-dev/conveyor
  shortDescription: Start, follow and approve Conveyor pipeline runs
  description: |
    Start Conveyor pipeline runs, draw where they stand as a pipeline graph,
    trigger, approve, reject and override their stages, read their logs across
    namespaces, and serve a live dashboard on localhost, all as your own
    kubeconfig user: the API server's RBAC and Conveyor's webhooks decide.
  platforms:
YAML
  for p in $platforms; do
    os=${p%/*} arch=${p#*/}
    work=$(mktemp -d)
    CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -ldflags "-s -w" -o "$work/kubectl-conveyor" "$root/cmd/kubectl-conveyor"
    cp "$root/README.md" "$work/"
    archive="kubectl-conveyor_${os}_${arch}.tar.gz"
    tar -C "$work" -czf "$dist/$archive" kubectl-conveyor README.md
    rm -rf "$work"
    sum=$(sha256sum "$dist/$archive" | cut -d' ' -f1)
    cat <<YAML
  - selector:
      matchLabels: {os: ${os}, arch: ${arch}}
    uri: ${base}/${archive}
    sha256: ${sum}
    bin: kubectl-conveyor
YAML
  done
} > "$dist/conveyor.yaml"
echo "Wrote $dist/conveyor.yaml and its archives"

//go:build tools

// Package tools pins the Helm CLI that the chart tests and `make helm-lint` build
// from source (hack/build-tools.sh): no binary is downloaded.
package tools

import _ "helm.sh/helm/v3/cmd/helm"

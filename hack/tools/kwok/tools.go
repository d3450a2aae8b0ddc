//go:build tools

// Package tools pins kwok, which simulates nodes and pods for the local
// cluster: pods of Conveyor's Jobs "run" without a container runtime.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"

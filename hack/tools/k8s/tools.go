//go:build tools

// Package tools pins the Kubernetes control-plane binaries that the tests and
// the local cluster build from source: kube-apiserver, kube-controller-manager,
// kube-scheduler (k8s.io/kubernetes) and etcd (go.etcd.io/etcd/server/v3).
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)

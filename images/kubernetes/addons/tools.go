//go:build tools

// Package tools names flanneld, which this module builds, so that `go mod tidy`
// keeps its dependencies.
package tools

import (
	_ "github.com/flannel-io/flannel"
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
)

//go:build tools

// Package tools pins the packages hack/build-peers.sh reads from this module:
// Harvester's API package, so that `go mod tidy` keeps everything
// controller-gen needs to load it (controller-gen runs over
// github.com/harvester/harvester/pkg/apis/harvesterhci.io/v1beta1 from this
// module), and Longhorn's, so its module (at the version Harvester pins) and
// the CRD manifest it ships stay verified by go.sum.
package tools

import (
	_ "github.com/harvester/harvester/pkg/apis/harvesterhci.io/v1beta1"
	_ "github.com/longhorn/longhorn-manager/k8s/pkg/apis/longhorn/v1beta2"
)

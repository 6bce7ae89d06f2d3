//go:build tools

// Package tools pins Harvester's API package so that `go mod tidy` keeps
// everything controller-gen needs to load it (hack/build-peers.sh runs
// controller-gen over github.com/harvester/harvester/pkg/apis/harvesterhci.io/v1beta1
// from this module).
package tools

import _ "github.com/harvester/harvester/pkg/apis/harvesterhci.io/v1beta1"

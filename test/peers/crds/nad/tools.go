//go:build tools

// Keeps the network-attachment-definition-client module (and so its checksum
// in go.sum) in this module's requirements; hack/build-peers.sh reads the CRD
// manifest it ships (artifacts/networks-crd.yaml) from the module cache.
package main

import _ "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"

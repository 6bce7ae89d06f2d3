// Command kubevirt-crd prints the virtualmachines.kubevirt.io CRD exactly as
// KubeVirt's virt-operator builds it (components.NewVirtualMachineCrd), as YAML.
//
// The object is emitted as the operator would create it: the empty status and
// the null creationTimestamp of the in-memory object are dropped.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/components"
	"sigs.k8s.io/yaml"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kubevirt-crd:", err)
		os.Exit(1)
	}
}

func run() error {
	crd, err := components.NewVirtualMachineCrd()
	if err != nil {
		return err
	}
	raw, err := json.Marshal(crd)
	if err != nil {
		return err
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		return err
	}
	delete(obj, "status")
	if meta, ok := obj["metadata"].(map[string]any); ok {
		delete(meta, "creationTimestamp")
	}
	out, err := yaml.Marshal(obj)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(append([]byte("---\n"), out...))
	return err
}

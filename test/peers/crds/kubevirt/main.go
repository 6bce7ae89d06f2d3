// Command kubevirt-crd prints one of KubeVirt's CRDs exactly as KubeVirt's
// virt-operator builds it (components.New…Crd), as YAML: `kubevirt-crd
// virtualmachines` (the default), `virtualmachineinstances` or
// `virtualmachineexports`.
//
// The object is emitted as the operator would create it: the empty status and
// the null creationTimestamp of the in-memory object are dropped.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	extv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/components"
	"sigs.k8s.io/yaml"
)

var crds = map[string]func() (*extv1.CustomResourceDefinition, error){
	"virtualmachines":         components.NewVirtualMachineCrd,
	"virtualmachineinstances": components.NewVirtualMachineInstanceCrd,
	"virtualmachineexports":   components.NewVirtualMachineExportCrd,
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kubevirt-crd:", err)
		os.Exit(1)
	}
}

func run() error {
	name := "virtualmachines"
	if len(os.Args) > 1 {
		name = os.Args[1]
	}
	build, ok := crds[name]
	if !ok {
		return fmt.Errorf("no CRD %q: one of virtualmachines, virtualmachineinstances, virtualmachineexports", name)
	}
	crd, err := build()
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

// Command kubevirt-gen prints KubeVirt objects exactly as KubeVirt's
// virt-operator builds them (package components), as YAML:
//
//	kubevirt-gen crd PLURAL      one CRD, e.g. virtualmachines
//	kubevirt-gen crds            every CRD virt-operator installs, in its order
//	kubevirt-gen webhooks URL CA the virt-api webhook configurations, keeping
//	                             only the webhooks for VirtualMachines, each
//	                             pointed at URL + its path and trusting the PEM
//	                             CA file (virt-api runs outside any Service)
//
// Objects are emitted as the operator would create them: the empty status and
// the null creationTimestamp of the in-memory object are dropped.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	extv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/components"
	"sigs.k8s.io/yaml"
)

// The CRDs virt-operator installs, in the order of its install strategy
// (pkg/virt-operator/resource/generate/install: GenerateCurrentInstallStrategy).
var installed = []func() (*extv1.CustomResourceDefinition, error){
	components.NewVirtualMachineInstanceCrd, components.NewPresetCrd, components.NewReplicaSetCrd,
	components.NewVirtualMachineCrd, components.NewVirtualMachineInstanceMigrationCrd,
	components.NewVirtualMachineSnapshotCrd, components.NewVirtualMachineSnapshotContentCrd,
	components.NewVirtualMachineRestoreCrd, components.NewVirtualMachineInstancetypeCrd,
	components.NewVirtualMachineClusterInstancetypeCrd, components.NewVirtualMachinePoolCrd,
	components.NewMigrationPolicyCrd, components.NewVirtualMachinePreferenceCrd,
	components.NewVirtualMachineClusterPreferenceCrd, components.NewVirtualMachineExportCrd,
	components.NewVirtualMachineCloneCrd,
}

// The namespace virt-operator installs into; only named in the Service
// references that are replaced by URLs here.
const installNamespace = "kubevirt"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "kubevirt-gen:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	switch {
	case len(args) == 2 && args[0] == "crd":
		crds, err := allCrds()
		if err != nil {
			return err
		}
		i := slices.IndexFunc(crds, func(c *extv1.CustomResourceDefinition) bool { return c.Spec.Names.Plural == args[1] })
		if i < 0 {
			return fmt.Errorf("no CRD with plural %q (see `kubevirt-gen crds`)", args[1])
		}
		return emit(crds[i])
	case len(args) == 1 && args[0] == "crds":
		crds, err := allCrds()
		if err != nil {
			return err
		}
		for _, crd := range crds {
			if err := emit(crd); err != nil {
				return err
			}
		}
		return nil
	case len(args) == 3 && args[0] == "webhooks":
		ca, err := os.ReadFile(args[2])
		if err != nil {
			return err
		}
		mutating, validating := webhooks(args[1], ca)
		if err := emit(mutating); err != nil {
			return err
		}
		return emit(validating)
	default:
		return fmt.Errorf("usage: kubevirt-gen crd PLURAL | crds | webhooks URL CA_FILE")
	}
}

func allCrds() ([]*extv1.CustomResourceDefinition, error) {
	crds := make([]*extv1.CustomResourceDefinition, 0, len(installed))
	for _, build := range installed {
		crd, err := build()
		if err != nil {
			return nil, err
		}
		crds = append(crds, crd)
	}
	return crds, nil
}

// webhooks returns virt-api's configurations with only the VirtualMachine
// webhooks, each calling url + the path of the Service it names.
func webhooks(url string, ca []byte) (*admissionregistrationv1.MutatingWebhookConfiguration, *admissionregistrationv1.ValidatingWebhookConfiguration) {
	mutating := components.NewVirtAPIMutatingWebhookConfiguration(installNamespace)
	mutating.Webhooks = slices.DeleteFunc(mutating.Webhooks, func(w admissionregistrationv1.MutatingWebhook) bool {
		return !forVirtualMachines(w.Rules)
	})
	for i := range mutating.Webhooks {
		mutating.Webhooks[i].ClientConfig = direct(mutating.Webhooks[i].ClientConfig, url, ca)
	}
	validating := components.NewVirtAPIValidatingWebhookConfiguration(installNamespace)
	validating.Webhooks = slices.DeleteFunc(validating.Webhooks, func(w admissionregistrationv1.ValidatingWebhook) bool {
		return !forVirtualMachines(w.Rules)
	})
	for i := range validating.Webhooks {
		validating.Webhooks[i].ClientConfig = direct(validating.Webhooks[i].ClientConfig, url, ca)
	}
	return mutating, validating
}

func forVirtualMachines(rules []admissionregistrationv1.RuleWithOperations) bool {
	return slices.ContainsFunc(rules, func(r admissionregistrationv1.RuleWithOperations) bool {
		return slices.Contains(r.Resources, "virtualmachines")
	})
}

func direct(config admissionregistrationv1.WebhookClientConfig, url string, ca []byte) admissionregistrationv1.WebhookClientConfig {
	path := ""
	if config.Service != nil && config.Service.Path != nil {
		path = *config.Service.Path
	}
	target := url + path
	return admissionregistrationv1.WebhookClientConfig{URL: &target, CABundle: ca}
}

func emit(object any) error {
	raw, err := json.Marshal(object)
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

package main

import (
	"fmt"
	"reflect"

	wclients "github.com/rancher/wrangler/v3/pkg/clients"
	storagev1 "github.com/rancher/wrangler/v3/pkg/generated/controllers/storage"
	"github.com/rancher/wrangler/v3/pkg/webhook"
	"github.com/sirupsen/logrus"
	"k8s.io/client-go/rest"

	ctlharvestercorev1 "github.com/harvester/harvester/pkg/generated/controllers/core"
	ctlharvesterv1 "github.com/harvester/harvester/pkg/generated/controllers/harvesterhci.io"
	ctlcniv1 "github.com/harvester/harvester/pkg/generated/controllers/k8s.cni.cncf.io"
	ctlkubeovnv1 "github.com/harvester/harvester/pkg/generated/controllers/kubeovn.io/v1"
	ctlkubevirtv1 "github.com/harvester/harvester/pkg/generated/controllers/kubevirt.io"
	"github.com/harvester/harvester/pkg/webhook/clients"
	"github.com/harvester/harvester/pkg/webhook/config"
	"github.com/harvester/harvester/pkg/webhook/resources/virtualmachine"
	"github.com/harvester/harvester/pkg/webhook/resources/virtualmachineimage"
	"github.com/harvester/harvester/pkg/webhook/types"
)

// served holds the admitters this program runs: Harvester's own, built by
// Harvester's constructors with the caches Harvester's pkg/webhook/server
// (server.Mutation and server.Validation of v1.8.2) passes them, in the order
// it lists them there.
type served struct {
	mutators   []types.Mutator
	validators []types.Validator
}

// newServed builds the served admitters on CLIENTS. kubeovnSubnetCache is
// nil unless Kube-OVN's Subnet CRD exists (as in Harvester). The expressions
// are Harvester's, verbatim (webhooks_test.go compares them).
func newServed(clients *clients.Clients, kubeovnSubnetCache ctlkubeovnv1.SubnetCache) served {
	// As server.Mutation's locals.
	settingCache := clients.HarvesterFactory.Harvesterhci().V1beta1().Setting().Cache()
	storageClassCache := clients.StorageFactory.Storage().V1().StorageClass().Cache()
	nadCache := clients.CNIFactory.K8s().V1().NetworkAttachmentDefinition().Cache()
	kubevirtCache := clients.KubevirtFactory.Kubevirt().V1().KubeVirt().Cache()
	return served{
		mutators: []types.Mutator{
			virtualmachine.NewMutator(settingCache, nadCache, kubevirtCache, kubeovnSubnetCache),
			virtualmachineimage.NewMutator(storageClassCache),
		},
		validators: []types.Validator{
			virtualmachine.NewValidator(
				clients.Core.Namespace().Cache(),
				clients.Core.Pod().Cache(),
				clients.Core.PersistentVolumeClaim().Cache(),
				clients.HarvesterCoreFactory.Core().V1().ResourceQuota().Cache(),
				clients.HarvesterFactory.Harvesterhci().V1beta1().VirtualMachineBackup().Cache(),
				clients.KubevirtFactory.Kubevirt().V1().VirtualMachineInstanceMigration().Cache(),
				clients.KubevirtFactory.Kubevirt().V1().VirtualMachine().Cache(),
				clients.KubevirtFactory.Kubevirt().V1().VirtualMachineInstance().Cache(),
				clients.CNIFactory.K8s().V1().NetworkAttachmentDefinition().Cache(),
				clients.KubevirtFactory.Kubevirt().V1().KubeVirt().Cache(),
				clients.StorageFactory.Storage().V1().StorageClass().Cache(),
				clients.HarvesterFactory.Harvesterhci().V1beta1().Setting().Cache()),
			virtualmachineimage.NewValidator(
				clients.HarvesterFactory.Harvesterhci().V1beta1().VirtualMachineImage().Cache(),
				clients.Core.Pod().Cache(),
				clients.Core.PersistentVolumeClaim().Cache(),
				clients.K8s.AuthorizationV1().SelfSubjectAccessReviews(),
				clients.HarvesterFactory.Harvesterhci().V1beta1().VirtualMachineTemplateVersion().Cache(),
				clients.StorageFactory.Storage().V1().StorageClass().Cache(),
				clients.HarvesterFactory.Harvesterhci().V1beta1().VirtualMachineBackup().Cache()),
		},
	}
}

// mutationResources and validationResources are what the admitters declare
// they handle: the input of the webhook rules.
func (s served) mutationResources() []types.Resource {
	out := make([]types.Resource, 0, len(s.mutators))
	for _, m := range s.mutators {
		out = append(out, m.Resource())
	}
	return out
}

func (s served) validationResources() []types.Resource {
	out := make([]types.Resource, 0, len(s.validators))
	for _, v := range s.validators {
		out = append(out, v.Resource())
	}
	return out
}

// routers returns the mutation and validation handlers, wired as Harvester's
// server.Mutation / server.Validation do (its addHandler): a wrangler router
// matching each admitter's kind, group and type, handled by Harvester's
// AdmissionHandler; validators through Harvester's ValidatorAdapter.
func (s served) routers(options *config.Options) (mutation, validation *webhook.Router) {
	mutation = webhook.NewRouter()
	for _, m := range s.mutators {
		addHandler(mutation, types.AdmissionTypeMutation, m, options)
	}
	validation = webhook.NewRouter()
	for _, v := range s.validators {
		addHandler(validation, types.AdmissionTypeValidation, types.NewValidatorAdapter(v), options)
	}
	return mutation, validation
}

// addHandler is Harvester's pkg/webhook/server addHandler (unexported there).
func addHandler(router *webhook.Router, admissionType string, admitter types.Admitter, options *config.Options) {
	rsc := admitter.Resource()
	kind := reflect.Indirect(reflect.ValueOf(rsc.ObjectType)).Type().Name()
	router.Kind(kind).Group(rsc.APIGroup).Type(rsc.ObjectType).Handle(types.NewAdmissionHandler(admitter, admissionType, options))
	logrus.Infof("add %s handler for %+v.%s (%s)", admissionType, rsc.Names, rsc.APIGroup, kind)
}

// offlineClients returns clients with the factories newServed uses, never
// started and never connected (Harvester's clients.New starts its factories,
// which pings the API server): enough to build the admitters and ask them
// which resources they handle.
func offlineClients() (*clients.Clients, error) {
	cfg := &rest.Config{Host: "https://offline.invalid"}
	w, err := wclients.NewFromConfig(cfg, nil)
	if err != nil {
		return nil, fmt.Errorf("wrangler clients: %w", err)
	}
	c := &clients.Clients{Clients: *w}
	if c.HarvesterFactory, err = ctlharvesterv1.NewFactoryFromConfigWithOptions(cfg, w.FactoryOptions); err != nil {
		return nil, err
	}
	if c.HarvesterCoreFactory, err = ctlharvestercorev1.NewFactoryFromConfigWithOptions(cfg, w.FactoryOptions); err != nil {
		return nil, err
	}
	if c.KubevirtFactory, err = ctlkubevirtv1.NewFactoryFromConfigWithOptions(cfg, w.FactoryOptions); err != nil {
		return nil, err
	}
	if c.CNIFactory, err = ctlcniv1.NewFactoryFromConfigWithOptions(cfg, w.FactoryOptions); err != nil {
		return nil, err
	}
	if c.StorageFactory, err = storagev1.NewFactoryFromConfigWithOptions(cfg, w.FactoryOptions); err != nil {
		return nil, err
	}
	return c, nil
}

package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	lhv1beta2 "github.com/longhorn/longhorn-manager/k8s/pkg/apis/longhorn/v1beta2"
	wcrd "github.com/rancher/wrangler/v3/pkg/crd"
	extv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"kubevirt.io/kubevirt/pkg/virt-operator/resource/generate/components"

	harvesterv1 "github.com/harvester/harvester/pkg/apis/harvesterhci.io/v1beta1"
	harvestercrd "github.com/harvester/harvester/pkg/util/crd"
)

// requiredCRD is a CRD the server needs: one of its informers lists and
// watches that kind (the caches Harvester's constructors and indexers ask for),
// and the informers must sync before the server answers.
type requiredCRD struct {
	name string
	gvk  schema.GroupVersionKind
	why  string
	// peersFile is the file of hack/build-peers.sh's output that already
	// holds it ("" if none).
	peersFile string
	// source says where build's definition comes from.
	source string
	build  func() (*extv1.CustomResourceDefinition, error)
}

var (
	kubevirtGV  = kubevirtv1.SchemeGroupVersion
	harvesterGV = harvesterv1.SchemeGroupVersion
)

// requiredCRDs lists every CRD the served admitters' informers need, in the
// order `crds --list` prints them. Built-in kinds the server also watches:
// namespaces, pods, persistentvolumeclaims, resourcequotas, storageclasses.
var requiredCRDs = []requiredCRD{
	{
		name: "virtualmachines.kubevirt.io", gvk: kubevirtGV.WithKind("VirtualMachine"),
		why:       "VM validator: PVC owners, duplicate MACs (indexes of pkg/webhook/indexeres and pkg/util/indexeres)",
		peersFile: "crds/kubevirt-virtualmachines.yaml",
		source:    "KubeVirt components.NewVirtualMachineCrd", build: components.NewVirtualMachineCrd,
	},
	{
		name: "virtualmachineinstances.kubevirt.io", gvk: kubevirtGV.WithKind("VirtualMachineInstance"),
		why:       "VM validator's VMI cache",
		peersFile: "crds/kubevirt-virtualmachineinstances.yaml",
		source:    "KubeVirt components.NewVirtualMachineInstanceCrd", build: components.NewVirtualMachineInstanceCrd,
	},
	{
		name: "virtualmachineinstancemigrations.kubevirt.io", gvk: kubevirtGV.WithKind("VirtualMachineInstanceMigration"),
		why:    "VM validator's resource-quota calculator; the vmim-by-vm index",
		source: "KubeVirt components.NewVirtualMachineInstanceMigrationCrd", build: components.NewVirtualMachineInstanceMigrationCrd,
	},
	{
		name: "kubevirts.kubevirt.io", gvk: kubevirtGV.WithKind("KubeVirt"),
		why:    "VM mutator (architecture) and validator (ExpandDisks gate) read harvester-system/kubevirt",
		source: "KubeVirt components.NewKubeVirtCrd", build: components.NewKubeVirtCrd,
	},
	{
		name: "settings.harvesterhci.io", gvk: harvesterGV.WithKind("Setting"),
		why:       "VM mutator: overcommit-config, additional-guest-memory-overhead-ratio, default-vm-termination-grace-period-seconds",
		peersFile: "crds/harvester-settings.yaml",
	},
	{
		name: "virtualmachineimages.harvesterhci.io", gvk: harvesterGV.WithKind("VirtualMachineImage"),
		why:       "image validator (display names, sources); image indexes",
		peersFile: "crds/harvester-virtualmachineimages.yaml",
	},
	{
		name: "virtualmachinebackups.harvesterhci.io", gvk: harvesterGV.WithKind("VirtualMachineBackup"),
		why:    "VM validator (no stop during a backup), image validator (images in backups); backup indexes",
		source: "Harvester pkg/util/crd.FromGV(VirtualMachineBackup)",
		build:  harvesterCRD("VirtualMachineBackup", harvesterv1.VirtualMachineBackup{}),
	},
	{
		name: "virtualmachinerestores.harvesterhci.io", gvk: harvesterGV.WithKind("VirtualMachineRestore"),
		why:    "only pkg/webhook/indexeres.RegisterIndexers (restore indexes)",
		source: "Harvester pkg/util/crd.FromGV(VirtualMachineRestore)",
		build:  harvesterCRD("VirtualMachineRestore", harvesterv1.VirtualMachineRestore{}),
	},
	{
		name: "schedulevmbackups.harvesterhci.io", gvk: harvesterGV.WithKind("ScheduleVMBackup"),
		why:    "only pkg/webhook/indexeres.RegisterIndexers (schedule indexes)",
		source: "Harvester pkg/util/crd.FromGV(ScheduleVMBackup)",
		build:  harvesterCRD("ScheduleVMBackup", harvesterv1.ScheduleVMBackup{}),
	},
	{
		name: "virtualmachinetemplateversions.harvesterhci.io", gvk: harvesterGV.WithKind("VirtualMachineTemplateVersion"),
		why:    "image validator (images owned by a template version)",
		source: "Harvester pkg/util/crd.FromGV(VirtualMachineTemplateVersion)",
		build:  harvesterCRD("VirtualMachineTemplateVersion", harvesterv1.VirtualMachineTemplateVersion{}),
	},
	{
		name: "volumes.longhorn.io", gvk: lhv1beta2.SchemeGroupVersion.WithKind("Volume"),
		why:    "only pkg/webhook/indexeres.RegisterIndexers (volume-by-replica-count index)",
		source: "Harvester pkg/util/crd.FromGV(longhorn Volume) (as its tests/integration)",
		build: func() (*extv1.CustomResourceDefinition, error) {
			return wranglerCRD(harvestercrd.FromGV(lhv1beta2.SchemeGroupVersion, "Volume", lhv1beta2.Volume{}))
		},
	},
	{
		name: "network-attachment-definitions.k8s.cni.cncf.io", gvk: schema.GroupVersionKind{Group: "k8s.cni.cncf.io", Version: "v1", Kind: "NetworkAttachmentDefinition"},
		why:       "VM mutator (cluster-network affinity) and validator (MACs per cluster network); every NAD a VM uses must exist",
		peersFile: "crds/nad.yaml",
	},
}

// subnetsCRDName is optional: if it exists at start, the VM mutator also gets
// Kube-OVN's Subnet cache (managed-tap bindings on overlay networks), as
// Harvester's server does.
const subnetsCRDName = "subnets.kubeovn.io"

func harvesterCRD(kind string, obj any) func() (*extv1.CustomResourceDefinition, error) {
	return func() (*extv1.CustomResourceDefinition, error) {
		return wranglerCRD(harvestercrd.FromGV(harvesterGV, kind, obj))
	}
}

// wranglerCRD is DEF as wrangler creates it on an API server.
func wranglerCRD(def wcrd.CRD) (*extv1.CustomResourceDefinition, error) {
	obj, err := def.ToCustomResourceDefinition()
	if err != nil {
		return nil, err
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("wrangler built a %T for %s", obj, def.GVK)
	}
	crd := &extv1.CustomResourceDefinition{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, crd); err != nil {
		return nil, fmt.Errorf("wrangler's CRD for %s: %w", def.GVK, err)
	}
	return crd, nil
}

func runCRDs(args []string) error {
	fs := newFlagSet("crds", "[--list | --all]")
	list := fs.Bool("list", false, "list every CRD the server needs, why, and where it comes from (no YAML)")
	all := fs.Bool("all", false, "print every CRD this program has a definition of, also those hack/build-peers.sh makes")
	if err := fs.parse(args, false); err != nil {
		return err
	}
	if *list {
		return listCRDs()
	}
	for _, r := range requiredCRDs {
		if r.build == nil || (r.peersFile != "" && !*all) {
			continue
		}
		crd, err := r.build()
		if err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
		if crd.Name != r.name {
			return fmt.Errorf("%s: definition is named %s", r.name, crd.Name)
		}
		if err := writeYAML(os.Stdout, crd); err != nil {
			return err
		}
	}
	return nil
}

func listCRDs() error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CRD\tFROM\tWHY")
	for _, r := range requiredCRDs {
		from := r.peersFile
		if from == "" {
			from = "crds: " + r.source
		} else {
			from = "build-peers: " + from
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", r.name, from, r.why)
	}
	fmt.Fprintf(w, "%s\toptional\tif present at start, the VM mutator also reads Kube-OVN Subnets (as Harvester)\n", subnetsCRDName)
	fmt.Fprintf(w, "(built-in)\t\t%s\n", strings.Join([]string{"namespaces", "pods", "persistentvolumeclaims", "resourcequotas", "storageclasses"}, ", "))
	return w.Flush()
}

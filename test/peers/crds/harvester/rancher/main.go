// Command rancher prints a management.cattle.io/v3 CRD as Rancher (and
// Harvester's installer) register it at start: wrangler's CRD built from the Go
// type of the rancher/pkg/apis version Harvester pins, cluster-scoped or not as
// Rancher has it.
//
//	rancher ManagedChart   namespaced, with the status subresource
//	                       (rancher/pkg/crds: crd.CRD{SchemaObject: v3.ManagedChart{}}.WithStatus())
//	rancher Setting        cluster-scoped (the UI reads ui-performance)
//	rancher Feature        cluster-scoped (the UI reads ui-sql-cache)
package main

import (
	"fmt"
	"os"

	v3 "github.com/rancher/rancher/pkg/apis/management.cattle.io/v3"
	"github.com/rancher/wrangler/v3/pkg/crd"
	"sigs.k8s.io/yaml"
)

func definition(kind string) (crd.CRD, error) {
	gvk := v3.SchemeGroupVersion.WithKind(kind)
	switch kind {
	case "ManagedChart":
		return crd.CRD{GVK: gvk, PluralName: "managedcharts", SchemaObject: v3.ManagedChart{}}.WithStatus(), nil
	case "Setting":
		return crd.CRD{GVK: gvk, PluralName: "settings", NonNamespace: true, SchemaObject: v3.Setting{}}, nil
	case "Feature":
		return crd.CRD{GVK: gvk, PluralName: "features", NonNamespace: true, SchemaObject: v3.Feature{}}, nil
	}
	return crd.CRD{}, fmt.Errorf("unknown kind %q: want ManagedChart, Setting or Feature", kind)
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: rancher ManagedChart|Setting|Feature")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(kind string) error {
	def, err := definition(kind)
	if err != nil {
		return err
	}
	c, err := def.ToCustomResourceDefinition()
	if err != nil {
		return err
	}
	out, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(out)
	return err
}

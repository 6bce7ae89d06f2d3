// Command managedchart prints the ManagedChart CRD as Rancher registers it at
// start: wrangler's CRD built from the Go type, with the status subresource
// (rancher/pkg/crds: crd.CRD{SchemaObject: v3.ManagedChart{}}.WithStatus()).
package main

import (
	"fmt"
	"os"

	v3 "github.com/rancher/rancher/pkg/apis/management.cattle.io/v3"
	"github.com/rancher/wrangler/v3/pkg/crd"
	"sigs.k8s.io/yaml"
)

func main() {
	def, err := crd.CRD{
		GVK:          v3.SchemeGroupVersion.WithKind("ManagedChart"),
		PluralName:   "managedcharts",
		SchemaObject: v3.ManagedChart{},
	}.WithStatus().ToCustomResourceDefinition()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := yaml.Marshal(def)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Stdout.Write(out)
}

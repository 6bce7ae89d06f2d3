package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	harvesterv1 "github.com/harvester/harvester/pkg/apis/harvesterhci.io/v1beta1"
	"github.com/harvester/harvester/pkg/settings"
	"github.com/harvester/harvester/pkg/util"
)

const harvesterModule = "github.com/harvester/harvester"

// chartObjects are the objects of Harvester's chart (deploy/charts/harvester,
// installed as release "harvester" in harvester-system with its default
// values) that the served webhooks read, by rendered template.
var chartObjects = []string{
	// The KubeVirt CR harvester-system/kubevirt: the VM mutator reads its
	// default architecture, the validator its feature gates (ExpandDisks).
	"harvester/charts/kubevirt/templates/kubevirt.yaml",
	// StorageClasses harvester-longhorn (the default: the image mutator
	// targets it and copies its parameters) and vmstate-persistence.
	"harvester/templates/harvester-storageclass.yaml",
}

func runDefaults(args []string) error {
	fs := newFlagSet("defaults", "[--harvester-dir DIR]")
	dir := fs.String("harvester-dir", "", "source of the pinned Harvester module (its chart is rendered);\n"+
		"default: its directory in the Go module cache (go mod download puts it there)")
	if err := fs.parse(args, false); err != nil {
		return err
	}
	if *dir == "" {
		d, err := harvesterModuleDir()
		if err != nil {
			return err
		}
		*dir = d
	}
	version, _ := harvesterModuleVersion()
	fmt.Fprintf(os.Stdout, "# Objects of a default Harvester %s install that its VM and image webhooks read:\n"+
		"# its namespace, objects of its chart (deploy/charts/harvester, default values), and every\n"+
		"# Setting as Harvester's settings controller creates it (pkg/settings defaults, no value).\n", version)
	ns := &corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: util.HarvesterSystemNamespaceName},
	}
	if err := writeYAML(os.Stdout, ns); err != nil {
		return err
	}
	objs, err := renderChartObjects(filepath.Join(*dir, "deploy", "charts", "harvester"))
	if err != nil {
		return err
	}
	for _, o := range objs {
		if err := writeYAML(os.Stdout, o); err != nil {
			return err
		}
	}
	for _, s := range harvesterSettings() {
		if err := writeYAML(os.Stdout, s); err != nil {
			return err
		}
	}
	return nil
}

// harvesterModuleDir finds the source of the Harvester version this binary
// was built with in the Go module cache.
func harvesterModuleDir() (string, error) {
	version, err := harvesterModuleVersion()
	if err != nil {
		return "", fmt.Errorf("%v: pass --harvester-dir", err)
	}
	cache := os.Getenv("GOMODCACHE")
	if cache == "" {
		gopath := os.Getenv("GOPATH")
		if gopath == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("cannot locate the Go module cache (%v): pass --harvester-dir", err)
			}
			gopath = filepath.Join(home, "go")
		}
		cache = filepath.Join(filepath.SplitList(gopath)[0], "pkg", "mod")
	}
	// Module paths are lower case here, so no case escaping is needed.
	dir := filepath.Join(cache, filepath.FromSlash(harvesterModule)+"@"+version)
	if _, err := os.Stat(filepath.Join(dir, "deploy", "charts", "harvester", "Chart.yaml")); err != nil {
		return "", fmt.Errorf("Harvester %s is not in the Go module cache (%v): run `go mod download %s` in this program's module, or pass --harvester-dir",
			version, err, harvesterModule)
	}
	return dir, nil
}

// harvesterModuleVersion is the version of Harvester this binary was built with.
func harvesterModuleVersion() (string, error) {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path != harvesterModule {
				continue
			}
			if d.Replace != nil {
				return d.Replace.Version, nil
			}
			return d.Version, nil
		}
	}
	return "", fmt.Errorf("no build info for %s", harvesterModule)
}

// renderChartObjects renders CHARTDIR as `helm install harvester -n
// harvester-system` would with its default values (no cluster: lookups are
// empty) and returns the objects of chartObjects' templates.
func renderChartObjects(chartDir string) ([]map[string]any, error) {
	chrt, err := loader.Load(chartDir)
	if err != nil {
		return nil, fmt.Errorf("load Harvester's chart: %w", err)
	}
	vals := map[string]any{}
	if err := chartutil.ProcessDependenciesWithMerge(chrt, vals); err != nil {
		return nil, fmt.Errorf("Harvester's chart dependencies: %w", err)
	}
	opts := chartutil.ReleaseOptions{Name: "harvester", Namespace: util.HarvesterSystemNamespaceName, Revision: 1, IsInstall: true}
	renderVals, err := chartutil.ToRenderValues(chrt, vals, opts, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(chrt, renderVals)
	if err != nil {
		return nil, fmt.Errorf("render Harvester's chart: %w", err)
	}
	var out []map[string]any
	for _, template := range chartObjects {
		text, ok := files[template]
		if !ok {
			return nil, fmt.Errorf("Harvester's chart has no template %s", template)
		}
		manifests := releaseutil.SplitManifests(text)
		keys := make([]string, 0, len(manifests))
		for k := range manifests {
			keys = append(keys, k)
		}
		sort.Sort(releaseutil.BySplitManifestsOrder(keys))
		n := 0
		for _, k := range keys {
			var obj map[string]any
			if err := yaml.Unmarshal([]byte(manifests[k]), &obj); err != nil {
				return nil, fmt.Errorf("%s: %w", template, err)
			}
			if len(obj) == 0 {
				continue
			}
			// helm installs namespaced objects into the release namespace.
			if obj["kind"] == "KubeVirt" {
				meta, _ := obj["metadata"].(map[string]any)
				if meta == nil {
					return nil, fmt.Errorf("%s: object without metadata", template)
				}
				if _, set := meta["namespace"]; !set {
					meta["namespace"] = util.HarvesterSystemNamespaceName
				}
			}
			out = append(out, obj)
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("template %s rendered no object with the default values", template)
		}
	}
	return out, nil
}

// settingsCollector is a pkg/settings Provider that only receives the
// settings registry (settings.SetProvider hands it to SetAll).
type settingsCollector struct{ all map[string]settings.Setting }

func (c *settingsCollector) Get(string) string               { return "" }
func (c *settingsCollector) Set(string, string) error        { return nil }
func (c *settingsCollector) SetIfUnset(string, string) error { return nil }
func (c *settingsCollector) SetAll(all map[string]settings.Setting) error {
	c.all = all
	return nil
}

// harvesterSettings returns every Harvester Setting as its settings
// controller (pkg/controller/global/settings SetAll) creates it on a fresh
// install: named, with the registered default, no value. Sorted by name.
func harvesterSettings() []*harvesterv1.Setting {
	c := &settingsCollector{}
	_ = settings.SetProvider(c) // SetAll above never fails
	names := make([]string, 0, len(c.all))
	for n := range c.all {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]*harvesterv1.Setting, 0, len(names))
	for _, n := range names {
		out = append(out, &harvesterv1.Setting{
			TypeMeta:   metav1.TypeMeta{APIVersion: harvesterv1.SchemeGroupVersion.String(), Kind: "Setting"},
			ObjectMeta: metav1.ObjectMeta{Name: c.all[n].Name},
			Default:    c.all[n].Default,
		})
	}
	return out
}

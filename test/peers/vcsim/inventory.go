package main

import (
	"flag"
	"fmt"
	"sort"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
)

// inventoryFlags mirrors the inventory flags of govmomi's own vcsim command
// (same names, same meanings).
type inventoryFlags struct {
	datacenter     int
	cluster        int
	clusterHost    int
	standaloneHost int
	vm             int
	portgroup      int
	folder         int
	datastore      int
	pool           int
	autostart      bool
}

func (f *inventoryFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.datacenter, "dc", 1, "number of Datacenters")
	fs.IntVar(&f.cluster, "cluster", 1, "number of clusters per Datacenter")
	fs.IntVar(&f.clusterHost, "host", 3, "number of hosts per cluster")
	fs.IntVar(&f.standaloneHost, "standalone-host", 1, "number of standalone hosts per Datacenter")
	fs.IntVar(&f.vm, "vm", 2, "number of virtual machines per resource pool")
	fs.IntVar(&f.portgroup, "pg", 1, "number of DVS portgroups per Datacenter (backing of each VM's NIC)")
	fs.IntVar(&f.folder, "folder", 0, "number of Datacenters to place within a Folder")
	fs.IntVar(&f.datastore, "ds", 1, "number of local datastores (at least 1)")
	fs.IntVar(&f.pool, "pool", 0, "number of child resource pools per cluster")
	fs.BoolVar(&f.autostart, "autostart", true, "power on the VMs the model creates")
}

// newModel returns an (uncreated) vCenter model for the flags.
func (f *inventoryFlags) newModel() (*simulator.Model, error) {
	if f.datastore < 1 {
		return nil, fmt.Errorf("-ds must be at least 1 (got %d)", f.datastore)
	}
	m := simulator.VPX()
	m.Datacenter = f.datacenter
	m.Cluster = f.cluster
	m.ClusterHost = f.clusterHost
	m.Host = f.standaloneHost
	m.Machine = f.vm
	m.Portgroup = f.portgroup
	m.Folder = f.folder
	m.Datastore = f.datastore
	m.Pool = f.pool
	m.Autostart = f.autostart
	return m, nil
}

// installHandlers hooks our simulator extensions in after Model.Create and
// before the HTTP server starts: the Registry.Handler shim for ExportVm and
// our HttpNfcLease (export.go), and the HTTP paths /export/ and /harness/
// (harness.go, vms.go, networks.go). See docs/peers.md.
func installHandlers(m *simulator.Model, opts extOptions) (*extension, error) {
	return newExtension(m, opts)
}

// inventoryInfo is what the ready line reports about the created inventory.
type inventoryInfo struct {
	Datacenter     string   // name of the first Datacenter, e.g. DC0
	DatacenterPath string   // its inventory path, e.g. /DC0 or /F0/DC0
	Datastore      string   // name of the first Datastore, e.g. LocalDS_0
	DatastoreDir   string   // local directory backing that Datastore
	VMs            []string // inventory paths of all VirtualMachines, sorted
}

// inventoryPath walks the parent chain up to (not including) the root folder.
func inventoryPath(reg *simulator.Registry, e mo.Entity) string {
	var names []string
	for cur := e; cur != nil; {
		me := cur.Entity()
		if me.Parent == nil { // the root folder
			break
		}
		names = append(names, me.Name)
		next, _ := reg.Get(*me.Parent).(mo.Entity)
		cur = next
	}
	for i, j := 0, len(names)-1; i < j; i, j = i+1, j-1 {
		names[i], names[j] = names[j], names[i]
	}
	return "/" + strings.Join(names, "/")
}

// firstByName returns the entity of the given kind with the smallest name.
func firstByName(reg *simulator.Registry, kind string) mo.Entity {
	all := reg.All(kind)
	sort.Slice(all, func(i, j int) bool { return all[i].Entity().Name < all[j].Entity().Name })
	if len(all) == 0 {
		return nil
	}
	return all[0]
}

func describeInventory(m *simulator.Model) (*inventoryInfo, error) {
	reg := m.Map()
	info := &inventoryInfo{}

	dc := firstByName(reg, "Datacenter")
	if dc == nil {
		return nil, fmt.Errorf("model has no Datacenter")
	}
	info.Datacenter = dc.Entity().Name
	info.DatacenterPath = inventoryPath(reg, dc)

	ds := firstByName(reg, "Datastore")
	if ds == nil {
		return nil, fmt.Errorf("model has no Datastore")
	}
	info.Datastore = ds.Entity().Name
	sds, ok := ds.(*simulator.Datastore)
	if !ok {
		return nil, fmt.Errorf("unexpected datastore type %T", ds)
	}
	info.DatastoreDir = sds.Summary.Url

	info.VMs = []string{} // [] rather than null in the ready line
	for _, vm := range reg.All("VirtualMachine") {
		info.VMs = append(info.VMs, inventoryPath(reg, vm))
	}
	sort.Strings(info.VMs)
	return info, nil
}

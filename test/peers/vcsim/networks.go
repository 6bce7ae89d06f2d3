package main

import (
	"context"
	"fmt"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// networkRequest is the body of POST /harness/networks.
type networkRequest struct {
	Name string `json:"name"`
	// Kind: "dvpg" (default; a port group on the datacenter's first
	// distributed switch, e.g. DVS0) or "standard" (a host port group on
	// vSwitch0 of every host, which vcsim shows as a Network).
	Kind string `json:"kind,omitempty"`
	// Datacenter name; default the first datacenter.
	Datacenter string `json:"datacenter,omitempty"`
	VlanID     int32  `json:"vlanId,omitempty"`
}

type networkResponse struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"`
	Moref string `json:"moref"` // e.g. dvportgroup-12 or network-7
	Type  string `json:"type"`  // DistributedVirtualPortgroup | Network
}

func (x *extension) createNetwork(ctx context.Context, req *networkRequest) (*networkResponse, error) {
	if req.Name == "" {
		return nil, badRequest("name is required")
	}
	finder := find.NewFinder(x.client, false)
	var dc *object.Datacenter
	var err error
	if req.Datacenter == "" {
		first, ok := firstByName(x.reg, "Datacenter").(*simulator.Datacenter)
		if !ok {
			return nil, fmt.Errorf("no datacenter")
		}
		dc = object.NewDatacenter(x.client, first.Self)
	} else if dc, err = finder.Datacenter(ctx, req.Datacenter); err != nil {
		return nil, badRequest("datacenter %q: %v", req.Datacenter, err)
	}
	finder.SetDatacenter(dc)
	if _, err := finder.Network(ctx, req.Name); err == nil {
		return nil, &httpError{status: 409, msg: fmt.Sprintf("network %q exists", req.Name)}
	}

	switch req.Kind {
	case "", "dvpg":
		switches, err := finder.NetworkList(ctx, "*")
		if err != nil {
			return nil, err
		}
		var dvs *object.DistributedVirtualSwitch
		for _, n := range switches {
			if s, ok := n.(*object.DistributedVirtualSwitch); ok {
				dvs = s
				break
			}
		}
		if dvs == nil {
			return nil, badRequest("datacenter has no distributed switch (run vcsim with -pg >= 1)")
		}
		spec := types.DVPortgroupConfigSpec{
			Name:     req.Name,
			Type:     string(types.DistributedVirtualPortgroupPortgroupTypeEarlyBinding),
			NumPorts: 32,
			DefaultPortConfig: &types.VMwareDVSPortSetting{
				Vlan: &types.VmwareDistributedVirtualSwitchVlanIdSpec{VlanId: req.VlanID},
			},
		}
		task, err := dvs.AddPortgroup(ctx, []types.DVPortgroupConfigSpec{spec})
		if err != nil {
			return nil, err
		}
		if err := task.Wait(ctx); err != nil {
			return nil, fmt.Errorf("AddDVPortgroup_Task: %w", err)
		}
	case "standard":
		hosts, err := finder.HostSystemList(ctx, "*")
		if err != nil {
			return nil, err
		}
		for i, h := range hosts {
			ns, err := h.ConfigManager().NetworkSystem(ctx)
			if err != nil {
				return nil, err
			}
			err = ns.AddPortGroup(ctx, types.HostPortGroupSpec{Name: req.Name, VlanId: req.VlanID, VswitchName: "vSwitch0"})
			// vcsim keeps one Network object per datacenter: the second
			// host gets DuplicateName, which is fine.
			if err != nil && i == 0 {
				return nil, fmt.Errorf("AddPortGroup on %s: %w", h.Name(), err)
			}
		}
	default:
		return nil, badRequest("kind must be dvpg or standard")
	}

	net, err := finder.Network(ctx, req.Name)
	if err != nil {
		return nil, fmt.Errorf("new network %q not found: %w", req.Name, err)
	}
	ref := net.Reference()
	kind := req.Kind
	if kind == "" {
		kind = "dvpg"
	}
	return &networkResponse{Name: req.Name, Kind: kind, Moref: ref.Value, Type: ref.Type}, nil
}

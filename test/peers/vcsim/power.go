package main

import (
	"context"
	"fmt"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"
)

// powerRequest is the body of POST /harness/power: a power operation as a
// vSphere client makes it (PowerOnVM_Task / PowerOffVM_Task), so the change
// reaches WaitForUpdatesEx like any other. For clients that speak no SOAP,
// e.g. the UI's browser suite.
type powerRequest struct {
	// Moref of the VM, e.g. vm-57.
	Moref string `json:"moref"`
	// PowerState to reach: poweredOn or poweredOff.
	PowerState string `json:"powerState"`
}

type powerResponse struct {
	Moref      string `json:"moref"`
	PowerState string `json:"powerState"`
}

func (x *extension) setPower(ctx context.Context, req *powerRequest) (*powerResponse, error) {
	ref := types.ManagedObjectReference{Type: "VirtualMachine", Value: req.Moref}
	if x.reg.Get(ref) == nil {
		return nil, notFound("no VirtualMachine %q", req.Moref)
	}
	vm := object.NewVirtualMachine(x.client, ref)
	var (
		task *object.Task
		err  error
	)
	switch types.VirtualMachinePowerState(req.PowerState) {
	case types.VirtualMachinePowerStatePoweredOn:
		task, err = vm.PowerOn(ctx)
	case types.VirtualMachinePowerStatePoweredOff:
		task, err = vm.PowerOff(ctx)
	default:
		return nil, badRequest("powerState must be poweredOn or poweredOff, not %q", req.PowerState)
	}
	if err != nil {
		return nil, err
	}
	if _, err := task.WaitForResult(ctx); err != nil {
		return nil, badRequest("%s %s: %v", req.PowerState, req.Moref, err)
	}
	state, err := vm.PowerState(ctx)
	if err != nil {
		return nil, fmt.Errorf("read power state: %w", err)
	}
	return &powerResponse{Moref: req.Moref, PowerState: string(state)}, nil
}

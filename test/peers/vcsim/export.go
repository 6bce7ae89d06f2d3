package main

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// ExportVm and the HttpNfcLease it returns, like vCenter:
//
//   - ExportVm on a VM that is not powered off fails with InvalidPowerState.
//   - The lease starts `initializing` while every disk is converted to a
//     streamOptimized VMDK with qemu-img (or the subformat the VM names,
//     see vmRequest.ExportSubformat), then turns `ready` with one
//     deviceUrl per disk at https://HOST/export/<ticket>/disk-<n>.vmdk.
//   - Without HttpNfcLeaseProgress for -lease-timeout (counted from `ready`)
//     the lease turns `error` (Timedout). HttpNfcLeaseComplete → `done`,
//     HttpNfcLeaseAbort → `error`. Only a `ready` lease serves its URLs; a
//     download in flight is cut when the lease leaves `ready`.
//   - Leases stay in the inventory after they end, so state/error remain
//     readable through the PropertyCollector.

// exportSubformatKey is the VM's extraConfig key naming the VMDK subformat
// its export serves (see vmRequest.ExportSubformat).
const exportSubformatKey = "vmm.harness.exportSubformat"

// Lease phases, as in HttpNfcLeaseState.
const (
	phaseInitializing = types.HttpNfcLeaseStateInitializing
	phaseReady        = types.HttpNfcLeaseStateReady
	phaseDone         = types.HttpNfcLeaseStateDone
	phaseError        = types.HttpNfcLeaseStateError
)

type exportManager struct {
	x     *extension
	cache *conversionCache

	mu       sync.Mutex
	seq      int
	leases   []*exportLease
	byTicket map[string]*exportLease
}

// exportService is the proxy object ExportVm calls are retargeted to.
type exportService struct {
	Self types.ManagedObjectReference
	mgr  *exportManager
}

func (s *exportService) Reference() types.ManagedObjectReference { return s.Self }

// exportLease is an HttpNfcLease. The embedded mo type comes first, so the
// PropertyCollector reads its fields; the rest is ours, guarded by mgr.mu.
// Lock order: the simulator's object lock of the lease, then mgr.mu.
type exportLease struct {
	mo.HttpNfcLease

	mgr          *exportManager
	ticket       string
	vm           types.ManagedObjectReference
	vmName       string
	phase        atomic.Value // types.HttpNfcLeaseState
	created      time.Time
	readyAt      time.Time
	lastProgress time.Time
	ended        time.Time
	endReason    string
	errMsg       string
	percent      int32
	timer        *time.Timer
	disks        []*leaseDisk
	requests     int64
	bytesServed  atomic.Int64
}

type leaseDisk struct {
	name      string // disk-0.vmdk
	key       string // /vm-57/ParaVirtualSCSIController0:0
	importKey string // /<vm name>/ParaVirtualSCSIController0:0
	flat      string // local flat file
	capacity  int64
	adapter   string // qemu-img adapter_type
	subformat string // qemu-img subformat: streamOptimized unless the VM says
	conv      *conversion
}

func (l *exportLease) state() types.HttpNfcLeaseState {
	s, _ := l.phase.Load().(types.HttpNfcLeaseState)
	return s
}

func newExportManager(x *extension) (*exportManager, error) {
	dir := filepath.Join(x.opts.tmpDir, "exports")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return &exportManager{
		x:        x,
		byTicket: map[string]*exportLease{},
		cache:    &conversionCache{dir: dir, keep: x.opts.keepExports, qemuImg: x.opts.qemuImg, entries: map[convKey]*conversion{}},
	}, nil
}

// ExportVm is dispatched by vcsim through Registry.Handler; req.This is the VM.
func (s *exportService) ExportVm(ctx *simulator.Context, req *types.ExportVm) soap.HasFault {
	body := &methods.ExportVmBody{}
	ref, fault := s.mgr.exportVM(ctx, req.This)
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	body.Res = &types.ExportVmResponse{Returnval: ref}
	return body
}

func (m *exportManager) exportVM(ctx *simulator.Context, vmRef types.ManagedObjectReference) (types.ManagedObjectReference, *soap.Fault) {
	vm, ok := ctx.Map.Get(vmRef).(*simulator.VirtualMachine)
	if !ok {
		return types.ManagedObjectReference{}, simulator.Fault(fmt.Sprintf("managed object not found: %s", vmRef),
			&types.ManagedObjectNotFound{Obj: vmRef})
	}
	var (
		power     types.VirtualMachinePowerState
		devices   object.VirtualDeviceList
		vmName    string
		subformat = "streamOptimized"
	)
	ctx.WithLock(vm, func() {
		power = vm.Runtime.PowerState
		devices = append(devices, vm.Config.Hardware.Device...)
		vmName = vm.Name
		for _, o := range vm.Config.ExtraConfig {
			if v := o.GetOptionValue(); v.Key == exportSubformatKey {
				subformat, _ = v.Value.(string)
			}
		}
	})
	if power != types.VirtualMachinePowerStatePoweredOff {
		return types.ManagedObjectReference{}, simulator.Fault(
			fmt.Sprintf("The attempted operation cannot be performed in the current state (%s).", power),
			&types.InvalidPowerState{RequestedState: types.VirtualMachinePowerStatePoweredOff, ExistingState: power})
	}
	dc := datacenterOf(ctx.Map, vm)
	if dc == nil {
		return types.ManagedObjectReference{}, simulator.Fault("VM has no datacenter", &types.InvalidState{})
	}

	var disks []*leaseDisk
	var totalKB int64
	for _, d := range devices.SelectByType((*types.VirtualDisk)(nil)) {
		disk := d.(*types.VirtualDisk)
		b, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo)
		if !ok {
			continue
		}
		name := b.GetVirtualDeviceFileBackingInfo().FileName
		desc, descFile, fault := ctx.Map.FileManager().DiskDescriptor(ctx, &dc.Self, name)
		if fault != nil || len(desc.Extent) == 0 {
			return types.ManagedObjectReference{}, simulator.Fault(fmt.Sprintf("cannot read disk %s", name),
				&types.FileNotFound{FileFault: types.FileFault{File: name}})
		}
		ctrlType, bus, adapter := "VirtualController", int32(0), "lsilogic"
		if c, ok := devices.FindByKey(disk.ControllerKey).(types.BaseVirtualController); ok {
			ctrlType = reflect.TypeOf(c).Elem().Name()
			bus = c.GetVirtualController().BusNumber
			if _, ide := c.(*types.VirtualIDEController); ide {
				adapter = "ide"
			}
		}
		unit := int32(0)
		if disk.UnitNumber != nil {
			unit = *disk.UnitNumber
		}
		dev := fmt.Sprintf("%s%d:%d", ctrlType, bus, unit)
		capacity := disk.CapacityInBytes
		if capacity == 0 {
			capacity = disk.CapacityInKB * 1024
		}
		disks = append(disks, &leaseDisk{
			name:      fmt.Sprintf("disk-%d.vmdk", len(disks)),
			key:       fmt.Sprintf("/%s/%s", vmRef.Value, dev),
			importKey: fmt.Sprintf("/%s/%s", vmName, dev),
			flat:      filepath.Join(filepath.Dir(descFile), desc.Extent[0].Info),
			capacity:  capacity,
			adapter:   adapter,
			subformat: subformat,
		})
		totalKB += capacity / 1024
	}

	var ticket [16]byte
	_, _ = rand.Read(ticket[:])
	m.mu.Lock()
	m.seq++
	lease := &exportLease{
		HttpNfcLease: mo.HttpNfcLease{
			State:        types.HttpNfcLeaseStateInitializing,
			Mode:         string(types.HttpNfcLeaseModePushOrGet),
			Capabilities: types.HttpNfcLeaseCapabilities{PullModeSupported: false, CorsSupported: false},
		},
		mgr:     m,
		ticket:  hex.EncodeToString(ticket[:]),
		vm:      vmRef,
		vmName:  vmName,
		created: time.Now(),
		disks:   disks,
	}
	lease.Self = types.ManagedObjectReference{Type: "HttpNfcLease", Value: fmt.Sprintf("vmm-lease-%d", m.seq)}
	lease.phase.Store(phaseInitializing)
	m.leases = append(m.leases, lease)
	m.byTicket[lease.ticket] = lease
	m.mu.Unlock()
	ctx.Map.Put(lease)
	log.Printf("export: %s for %s (%q), %d disks", lease.Self.Value, vmRef.Value, vmName, len(disks))

	go m.prepare(lease, totalKB)
	return lease.Self, nil
}

// prepare converts the disks, then makes the lease ready (or error).
func (m *exportManager) prepare(l *exportLease, totalKB int64) {
	ctx := m.x.newContext(context.Background())
	base := m.x.base()
	var urls []types.HttpNfcLeaseDeviceUrl
	for _, d := range l.disks {
		if l.state() != phaseInitializing { // aborted meanwhile
			return
		}
		conv, err := m.cache.acquire(convKey{flat: d.flat, adapter: d.adapter, subformat: d.subformat}, d.capacity)
		if err != nil {
			m.finish(ctx, l, phaseError, "error", &types.LocalizedMethodFault{
				Fault:            &types.SystemError{Reason: err.Error()},
				LocalizedMessage: fmt.Sprintf("export of %s failed: %v", d.flat, err),
			}, []types.HttpNfcLeaseState{phaseInitializing})
			return
		}
		m.mu.Lock()
		if l.state() != phaseInitializing { // aborted during the conversion
			m.mu.Unlock()
			m.cache.release(conv)
			return
		}
		d.conv = conv
		m.mu.Unlock()
		u := base
		u.Path = exportPrefix + l.ticket + "/" + d.name
		urls = append(urls, types.HttpNfcLeaseDeviceUrl{
			Key:           d.key,
			ImportKey:     d.importKey,
			Url:           u.String(),
			SslThumbprint: m.x.opts.pki.Thumbprint(),
			Disk:          types.NewBool(true),
			TargetId:      d.name,
			FileSize:      conv.size,
		})
	}
	info := &types.HttpNfcLeaseInfo{
		Lease:                 l.Self,
		Entity:                l.vm,
		DeviceUrl:             urls,
		TotalDiskCapacityInKB: totalKB,
		LeaseTimeout:          int32(m.x.opts.leaseTimeout.Round(time.Second) / time.Second),
	}
	ctx.WithLock(l, func() {
		m.mu.Lock()
		if l.state() != phaseInitializing {
			m.mu.Unlock()
			return
		}
		now := time.Now()
		l.phase.Store(phaseReady)
		l.readyAt, l.lastProgress = now, now
		l.timer = time.AfterFunc(m.x.opts.leaseTimeout, func() { m.checkTimeout(l) })
		m.mu.Unlock()
		ctx.Update(l, []types.PropertyChange{
			{Name: "initializeProgress", Val: int32(100)},
			{Name: "info", Val: info},
			{Name: "state", Val: phaseReady},
		})
	})
}

// checkTimeout runs from the lease timer.
func (m *exportManager) checkTimeout(l *exportLease) {
	m.mu.Lock()
	if l.state() != phaseReady {
		m.mu.Unlock()
		return
	}
	if left := m.x.opts.leaseTimeout - time.Since(l.lastProgress); left > 0 {
		l.timer.Reset(left) // progress arrived as the timer fired
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	secs := m.x.opts.leaseTimeout.Seconds()
	m.finish(m.x.newContext(context.Background()), l, phaseError, "timeout", &types.LocalizedMethodFault{
		Fault:            &types.Timedout{},
		LocalizedMessage: fmt.Sprintf("lease timed out: no HttpNfcLeaseProgress within %gs", secs),
	}, []types.HttpNfcLeaseState{phaseReady})
}

// finish moves a lease from one of the states in from to a final state.
func (m *exportManager) finish(ctx *simulator.Context, l *exportLease, to types.HttpNfcLeaseState, reason string,
	fault *types.LocalizedMethodFault, from []types.HttpNfcLeaseState) bool {
	done := false
	ctx.WithLock(l, func() {
		m.mu.Lock()
		cur := l.state()
		ok := false
		for _, f := range from {
			ok = ok || cur == f
		}
		if !ok {
			m.mu.Unlock()
			return
		}
		l.phase.Store(to)
		l.ended = time.Now()
		l.endReason = reason
		if fault != nil {
			l.errMsg = fault.LocalizedMessage
		}
		if l.timer != nil {
			l.timer.Stop()
		}
		var convs []*conversion
		for _, d := range l.disks {
			if d.conv != nil {
				convs = append(convs, d.conv)
				d.conv = nil
			}
		}
		m.mu.Unlock()
		for _, c := range convs {
			m.cache.release(c)
		}
		changes := []types.PropertyChange{{Name: "state", Val: to}}
		if fault != nil {
			changes = append(changes, types.PropertyChange{Name: "error", Val: fault})
		}
		ctx.Update(l, changes)
		done = true
	})
	if done {
		log.Printf("export: %s %s (%s)", l.Self.Value, to, reason)
	}
	return done
}

func invalidState(l *exportLease, op string) *soap.Fault {
	return simulator.Fault(fmt.Sprintf("%s: lease %s is %s", op, l.Self.Value, l.state()), &types.InvalidState{})
}

func (l *exportLease) HttpNfcLeaseProgress(ctx *simulator.Context, req *types.HttpNfcLeaseProgress) soap.HasFault {
	body := &methods.HttpNfcLeaseProgressBody{}
	if req.Percent < 0 || req.Percent > 100 {
		body.Fault_ = simulator.Fault("percent must be 0..100", &types.InvalidArgument{InvalidProperty: "percent"})
		return body
	}
	m := l.mgr
	m.mu.Lock()
	switch l.state() {
	case phaseInitializing, phaseReady:
		l.lastProgress = time.Now()
		l.percent = req.Percent
		m.mu.Unlock()
	default:
		m.mu.Unlock()
		body.Fault_ = invalidState(l, "HttpNfcLeaseProgress")
		return body
	}
	ctx.Update(l, []types.PropertyChange{{Name: "transferProgress", Val: req.Percent}})
	body.Res = &types.HttpNfcLeaseProgressResponse{}
	return body
}

func (l *exportLease) HttpNfcLeaseComplete(ctx *simulator.Context, req *types.HttpNfcLeaseComplete) soap.HasFault {
	body := &methods.HttpNfcLeaseCompleteBody{}
	if !l.mgr.finish(ctx, l, phaseDone, "complete", nil, []types.HttpNfcLeaseState{phaseReady}) {
		body.Fault_ = invalidState(l, "HttpNfcLeaseComplete")
		return body
	}
	body.Res = &types.HttpNfcLeaseCompleteResponse{}
	return body
}

func (l *exportLease) HttpNfcLeaseAbort(ctx *simulator.Context, req *types.HttpNfcLeaseAbort) soap.HasFault {
	body := &methods.HttpNfcLeaseAbortBody{}
	fault := req.Fault
	if fault == nil {
		fault = &types.LocalizedMethodFault{Fault: &types.RequestCanceled{}, LocalizedMessage: "The task was canceled by a user."}
	}
	if !l.mgr.finish(ctx, l, phaseError, "abort", fault, []types.HttpNfcLeaseState{phaseInitializing, phaseReady}) {
		body.Fault_ = invalidState(l, "HttpNfcLeaseAbort")
		return body
	}
	body.Res = &types.HttpNfcLeaseAbortResponse{}
	return body
}

// HttpNfcLeaseGetManifest: SHA-1 and size of each disk as served.
func (l *exportLease) HttpNfcLeaseGetManifest(ctx *simulator.Context, req *types.HttpNfcLeaseGetManifest) soap.HasFault {
	body := &methods.HttpNfcLeaseGetManifestBody{}
	m := l.mgr
	m.mu.Lock()
	if l.state() != phaseReady {
		m.mu.Unlock()
		body.Fault_ = invalidState(l, "HttpNfcLeaseGetManifest")
		return body
	}
	type item struct {
		d    *leaseDisk
		conv *conversion
	}
	var items []item
	for _, d := range l.disks {
		items = append(items, item{d, d.conv})
	}
	m.mu.Unlock()
	res := &types.HttpNfcLeaseGetManifestResponse{}
	for _, it := range items {
		sum, err := it.conv.sha1()
		if err != nil {
			body.Fault_ = simulator.Fault(err.Error(), &types.SystemError{Reason: err.Error()})
			return body
		}
		res.Returnval = append(res.Returnval, types.HttpNfcLeaseManifestEntry{
			Key:      it.d.key,
			Sha1:     sum,
			Size:     it.conv.size,
			Disk:     true,
			Capacity: it.d.capacity,
		})
	}
	body.Res = res
	return body
}

// serveExport serves GET/HEAD /export/<ticket>/<disk-n>.vmdk (Range works).
func (m *exportManager) serveExport(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, exportPrefix), "/")
	if len(parts) != 2 {
		http.NotFound(w, r)
		return
	}
	m.mu.Lock()
	l := m.byTicket[parts[0]]
	var d *leaseDisk
	if l != nil && l.state() == phaseReady {
		for _, disk := range l.disks {
			if disk.name == parts[1] {
				d = disk
			}
		}
	}
	if d == nil || d.conv == nil {
		m.mu.Unlock()
		http.NotFound(w, r)
		return
	}
	conv := d.conv
	l.requests++
	m.mu.Unlock()

	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	f, err := os.Open(conv.path)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()

	lw := &leaseWriter{ResponseWriter: w, lease: l, limit: -1}
	if r.Method == http.MethodGet {
		if fault := m.x.faults.take(); fault != nil {
			log.Printf("export: %s %s: injected fault: %s", l.Self.Value, d.name, fault)
			if fault.Status != 0 {
				http.Error(w, "injected fault", fault.Status)
				return
			}
			lw.limit = *fault.FailAfterBytes
		}
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(lw, r, d.name, conv.modTime, f)
}

var errLeaseEnded = errors.New("lease ended")

// leaseWriter counts bytes served, stops when the lease leaves `ready`, and
// drops the connection after limit bytes (limit < 0: no limit).
type leaseWriter struct {
	http.ResponseWriter
	lease   *exportLease
	limit   int64
	written int64
}

func (w *leaseWriter) Write(p []byte) (int, error) {
	if w.lease.state() != phaseReady {
		panic(http.ErrAbortHandler) // cut the transfer like vCenter does
	}
	cut := false
	if w.limit >= 0 && w.written+int64(len(p)) > w.limit {
		p = p[:w.limit-w.written]
		cut = true
	}
	n, err := w.ResponseWriter.Write(p)
	w.written += int64(n)
	w.lease.bytesServed.Add(int64(n))
	if cut {
		_ = http.NewResponseController(w.ResponseWriter).Flush()
		panic(http.ErrAbortHandler)
	}
	return n, err
}

// --- harness view ---

type leaseView struct {
	ID              string     `json:"id"` // moref value (type HttpNfcLease)
	VM              string     `json:"vm"` // VM moref value
	VMName          string     `json:"vmName"`
	State           string     `json:"state"` // initializing | ready | done | error
	Created         time.Time  `json:"created"`
	Ready           *time.Time `json:"ready,omitempty"`
	LastProgress    *time.Time `json:"lastProgress,omitempty"`
	ProgressPercent int32      `json:"progressPercent"`
	Ended           *time.Time `json:"ended,omitempty"`
	EndReason       string     `json:"endReason,omitempty"` // complete | abort | timeout | error
	Error           string     `json:"error,omitempty"`
	TimeoutSeconds  float64    `json:"timeoutSeconds"`
	URLs            []string   `json:"urls"`
	Requests        int64      `json:"requests"`
	BytesServed     int64      `json:"bytesServed"`
}

type leasesView struct {
	Open   int         `json:"open"` // initializing or ready
	Leases []leaseView `json:"leases"`
	Cache  cacheView   `json:"cache"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (m *exportManager) view() leasesView {
	base := m.x.base()
	m.mu.Lock()
	defer m.mu.Unlock()
	v := leasesView{Leases: []leaseView{}}
	for _, l := range m.leases {
		st := l.state()
		if st == phaseInitializing || st == phaseReady {
			v.Open++
		}
		lv := leaseView{
			ID: l.Self.Value, VM: l.vm.Value, VMName: l.vmName, State: string(st),
			Created: l.created, Ready: timePtr(l.readyAt), LastProgress: timePtr(l.lastProgress),
			ProgressPercent: l.percent, Ended: timePtr(l.ended), EndReason: l.endReason, Error: l.errMsg,
			TimeoutSeconds: m.x.opts.leaseTimeout.Seconds(), URLs: []string{},
			Requests: l.requests, BytesServed: l.bytesServed.Load(),
		}
		for _, d := range l.disks {
			u := base
			u.Path = exportPrefix + l.ticket + "/" + d.name
			lv.URLs = append(lv.URLs, u.String())
		}
		v.Leases = append(v.Leases, lv)
	}
	v.Cache = m.cache.view()
	return v
}

func (m *exportManager) close() {
	m.mu.Lock()
	for _, l := range m.leases {
		if l.timer != nil {
			l.timer.Stop()
		}
	}
	m.mu.Unlock()
	m.cache.removeAll()
}

// --- streamOptimized conversions, cached by flat-file identity ---

type convKey struct {
	flat      string
	adapter   string
	subformat string
}

type fileID struct {
	size    int64
	modTime int64 // ns
	dev     uint64
	ino     uint64
}

type conversion struct {
	key     convKey
	id      fileID
	path    string // the converted VMDK
	size    int64
	modTime time.Time
	done    chan struct{}
	err     error
	refs    int  // guarded by cache.mu
	stale   bool // replaced in the cache; delete when unreferenced

	sumOnce sync.Once
	sum     string
	sumErr  error
}

func (c *conversion) sha1() (string, error) {
	c.sumOnce.Do(func() {
		f, err := os.Open(c.path)
		if err != nil {
			c.sumErr = err
			return
		}
		defer f.Close()
		h := sha1.New()
		if _, err := io.Copy(h, f); err != nil {
			c.sumErr = err
			return
		}
		c.sum = hex.EncodeToString(h.Sum(nil))
	})
	return c.sum, c.sumErr
}

type conversionCache struct {
	dir     string
	keep    bool
	qemuImg string

	mu      sync.Mutex
	seq     int
	entries map[convKey]*conversion
}

type cacheView struct {
	Entries int   `json:"entries"` // converted VMDKs on disk
	InUse   int   `json:"inUse"`   // of which referenced by open leases
	Bytes   int64 `json:"bytes"`
}

func identify(path string) (fileID, error) {
	st, err := os.Stat(path) // follows a rawFile symlink
	if err != nil {
		return fileID{}, err
	}
	id := fileID{size: st.Size(), modTime: st.ModTime().UnixNano()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(sys.Dev), sys.Ino
	}
	return id, nil
}

// acquire returns the conversion of key.flat to key.subformat (extended with
// zeros to capacity if shorter, as vcsim creates empty flat files),
// converting it unless an up-to-date one exists.
func (c *conversionCache) acquire(key convKey, capacity int64) (*conversion, error) {
	flat := key.flat
	if st, err := os.Lstat(flat); err == nil && st.Mode().IsRegular() && st.Size() < capacity {
		if err := os.Truncate(flat, capacity); err != nil {
			return nil, err
		}
	}
	id, err := identify(flat)
	if err != nil {
		return nil, err
	}

	c.mu.Lock()
	if e := c.entries[key]; e != nil {
		if e.id == id {
			e.refs++
			c.mu.Unlock()
			<-e.done
			if e.err != nil {
				c.release(e)
				return nil, e.err
			}
			return e, nil
		}
		delete(c.entries, key)
		e.stale = true
		if e.refs == 0 {
			_ = os.Remove(e.path)
		}
	}
	c.seq++
	e := &conversion{key: key, id: id, refs: 1, done: make(chan struct{}),
		path: filepath.Join(c.dir, fmt.Sprintf("export-%d.vmdk", c.seq))}
	c.entries[key] = e
	c.mu.Unlock()

	e.err = c.convert(key, e.path)
	if e.err == nil {
		if st, err := os.Stat(e.path); err != nil {
			e.err = err
		} else {
			e.size, e.modTime = st.Size(), st.ModTime()
		}
	}
	close(e.done)
	if e.err != nil {
		c.release(e)
		return nil, e.err
	}
	return e, nil
}

func (c *conversionCache) convert(key convKey, out string) error {
	start := time.Now()
	part := out + ".part"
	cmd := exec.Command(c.qemuImg, "convert", "-q", "-f", "raw", "-O", "vmdk",
		"-o", "subformat="+key.subformat+",adapter_type="+key.adapter, key.flat, part)
	if msg, err := cmd.CombinedOutput(); err != nil {
		_ = os.Remove(part)
		return fmt.Errorf("%s convert: %v: %s", c.qemuImg, err, strings.TrimSpace(string(msg)))
	}
	if err := os.Rename(part, out); err != nil {
		return err
	}
	log.Printf("export: converted %s to %s in %s", key.flat, key.subformat, time.Since(start).Round(time.Millisecond))
	return nil
}

// release drops a reference; unreferenced files are deleted unless kept as
// the cache entry of an unchanged flat file.
func (c *conversionCache) release(e *conversion) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	if e.refs > 0 {
		return
	}
	if e.stale || e.err != nil || !c.keep {
		if c.entries[e.key] == e {
			delete(c.entries, e.key)
		}
		_ = os.Remove(e.path)
	}
}

func (c *conversionCache) view() cacheView {
	c.mu.Lock()
	defer c.mu.Unlock()
	var v cacheView
	keys := make([]convKey, 0, len(c.entries))
	for k := range c.entries {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].flat < keys[j].flat })
	for _, k := range keys {
		e := c.entries[k]
		v.Entries++
		if e.refs > 0 {
			v.InUse++
		}
		v.Bytes += e.size
	}
	return v
}

func (c *conversionCache) removeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.entries {
		_ = os.Remove(e.path)
		delete(c.entries, k)
	}
}

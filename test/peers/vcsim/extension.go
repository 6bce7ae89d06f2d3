package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// HTTP path prefixes of our own (vcsim already owns /sdk, /folder/, /guestFile/, /nfc/, /about, /rest, /api).
const (
	harnessPrefix = "/harness/" // control endpoints for tests (see harness.go)
	exportPrefix  = "/export/"  // disk downloads of our HttpNfcLeases (see export.go)
)

// extOptions configure the simulator extensions.
type extOptions struct {
	leaseTimeout time.Duration // HttpNfcLease expires without HttpNfcLeaseProgress for this long
	qemuImg      string        // qemu-img binary that makes streamOptimized VMDKs
	keepExports  bool          // keep converted VMDKs after their lease ends (cached by flat-file identity)
	tmpDir       string        // our temp dir (converted VMDKs go below it)
	pki          *serverPKI    // the serving certificate: deviceUrl.sslThumbprint, POST /harness/certificate
}

// extension holds everything installHandlers adds to the simulator.
type extension struct {
	opts   extOptions
	model  *simulator.Model
	reg    *simulator.Registry
	client *vim25.Client // in-process client (no HTTP, internal session)

	mu      sync.Mutex
	baseURL *url.URL // https://127.0.0.1:PORT, known once the server listens

	exports *exportManager
	faults  *faultQueue
}

// newExtension wires the handlers into the model's Service and Registry; it
// must run after Model.Create and before Service.NewServer.
func newExtension(m *simulator.Model, opts extOptions) (*extension, error) {
	client, err := vim25.NewClient(context.Background(), m.Service)
	if err != nil {
		return nil, fmt.Errorf("in-process client: %w", err)
	}
	x := &extension{
		opts:   opts,
		model:  m,
		reg:    m.Map(),
		client: client,
		faults: &faultQueue{},
	}
	x.exports, err = newExportManager(x)
	if err != nil {
		return nil, err
	}

	// SOAP: methods vcsim lacks are retargeted to proxy objects of ours, see
	// notes/vcsim.md §1. The Handler runs for every call, so keep it cheap.
	service := &exportService{
		Self: types.ManagedObjectReference{Type: "VmmExportService", Value: "vmm-export-service"},
		mgr:  x.exports,
	}
	x.reg.Put(service)
	x.reg.Handler = func(ctx *simulator.Context, method *simulator.Method) (mo.Reference, types.BaseMethodFault) {
		if method.Name == "ExportVm" {
			// Service.call looks the handler up again by method.This after
			// this hook, so retarget This (the request body keeps the VM).
			method.This = service.Self
			return service, nil
		}
		return nil, nil
	}

	// HTTP: HandleFunc registrations are applied by NewServer.
	m.Service.HandleFunc(exportPrefix, x.exports.serveExport)
	m.Service.HandleFunc(harnessPrefix, x.serveHarness)
	return x, nil
}

// setBaseURL records where the server listens (scheme://host:port).
func (x *extension) setBaseURL(u *url.URL) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.baseURL = &url.URL{Scheme: u.Scheme, Host: u.Host}
}

// base returns a copy of the server's base URL.
func (x *extension) base() url.URL {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.baseURL == nil {
		return url.URL{Scheme: "https", Host: "127.0.0.1"}
	}
	return *x.baseURL
}

// close ends all leases and removes converted files.
func (x *extension) close() {
	x.exports.close()
}

// newContext is a simulator.Context for work done outside a SOAP call
// (HTTP handlers, timers): enough for locking and property updates.
func (x *extension) newContext(ctx context.Context) *simulator.Context {
	return &simulator.Context{Context: ctx, Map: x.reg}
}

// --- small helpers shared by the extensions ---

type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &httpError{status: http.StatusNotFound, msg: fmt.Sprintf(format, args...)}
}

// writeJSON writes v with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body.Bytes())
}

// writeError writes {"error": "..."} with the status of an *httpError, else 500.
func writeError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	if he, ok := err.(*httpError); ok {
		status = he.status
	}
	log.Printf("harness: %d %v", status, err)
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

// escapeName applies vCenter's escaping of entity names ('%' → %25, '/' →
// %2f, '\' → %5c), as vcsim's CreateVM/CreateFolder do.
func escapeName(name string) string {
	name = strings.ReplaceAll(name, `%`, `%25`)
	name = strings.ReplaceAll(name, `/`, `%2f`)
	name = strings.ReplaceAll(name, `\`, `%5c`)
	return name
}

// unescapeName reverses escapeName (case-insensitive hex).
func unescapeName(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		if name[i] == '%' && i+2 < len(name) {
			switch strings.ToLower(name[i+1 : i+3]) {
			case "2f":
				b.WriteByte('/')
				i += 2
				continue
			case "5c":
				b.WriteByte('\\')
				i += 2
				continue
			case "25":
				b.WriteByte('%')
				i += 2
				continue
			}
		}
		b.WriteByte(name[i])
	}
	return b.String()
}

// datacenterOf walks the parent chain of e up to its Datacenter.
func datacenterOf(reg *simulator.Registry, e mo.Entity) *simulator.Datacenter {
	for cur := e; cur != nil; {
		if dc, ok := cur.(*simulator.Datacenter); ok {
			return dc
		}
		p := cur.Entity().Parent
		if p == nil {
			return nil
		}
		next, _ := reg.Get(*p).(mo.Entity)
		cur = next
	}
	return nil
}

// entityPath is the inventory path of e with each element escaped the way
// vCenter paths are ('/' inside a name → %2f), so it can be split on '/'.
func entityPath(reg *simulator.Registry, e mo.Entity) string {
	var names []string
	for cur := e; cur != nil; {
		me := cur.Entity()
		if me.Parent == nil {
			break
		}
		names = append(names, strings.ReplaceAll(me.Name, "/", "%2f"))
		next, _ := reg.Get(*me.Parent).(mo.Entity)
		cur = next
	}
	for i, j := 0, len(names)-1; i < j; i, j = i+1, j-1 {
		names[i], names[j] = names[j], names[i]
	}
	return "/" + strings.Join(names, "/")
}

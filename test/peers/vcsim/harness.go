package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/vmware/govmomi/simulator"
)

// serveHarness routes the test-control endpoints under /harness/. They need
// no session (like vcsim's /folder) and speak JSON; errors are
// {"error": "..."} with status 400 (bad request), 404 or 500.
//
//	POST   /harness/vms       create a VM with real disk contents (vms.go)
//	POST   /harness/networks  add a distributed or standard port group
//	POST   /harness/power     power a VM on or off (power.go)
//	GET    /harness/leases    our HttpNfcLeases, open count, conversion cache
//	POST   /harness/faults    queue a fault for the next export download(s)
//	GET    /harness/faults    pending faults
//	DELETE /harness/faults    drop pending faults
//	POST   /harness/certificate  {"newCA": bool}: serve a new certificate
//	                          (from a new CA when newCA); answers {"caPem"}
//	PUT    /harness/property-collector  {"fullRecollect": bool}: upstream's
//	                          WaitForUpdatesEx (true) or our patch's (patches/)
func (x *extension) serveHarness(w http.ResponseWriter, r *http.Request) {
	route := r.Method + " " + r.URL.Path
	switch route {
	case "POST /harness/vms":
		var req vmRequest
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, err)
			return
		}
		res, err := x.createVM(r.Context(), &req)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, res)
	case "POST /harness/networks":
		var req networkRequest
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, err)
			return
		}
		res, err := x.createNetwork(r.Context(), &req)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, res)
	case "POST /harness/power":
		var req powerRequest
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, err)
			return
		}
		res, err := x.setPower(r.Context(), &req)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	case "GET /harness/leases":
		writeJSON(w, http.StatusOK, x.exports.view())
	case "POST /harness/faults":
		var f exportFault
		if err := decodeJSON(r, &f); err != nil {
			writeError(w, err)
			return
		}
		if err := f.validate(); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"pending": x.faults.push(f)})
	case "GET /harness/faults":
		writeJSON(w, http.StatusOK, map[string]any{"faults": x.faults.list()})
	case "DELETE /harness/faults":
		x.faults.clear()
		writeJSON(w, http.StatusOK, map[string]any{"pending": 0})
	case "POST /harness/certificate":
		var req certificateRequest
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, err)
			return
		}
		if err := x.opts.pki.rotate(req.NewCA); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"caPem": x.opts.pki.caPEM()})
	case "PUT /harness/property-collector":
		var req propertyCollectorMode
		if err := decodeJSON(r, &req); err != nil {
			writeError(w, err)
			return
		}
		simulator.FullRecollect.Store(req.FullRecollect)
		writeJSON(w, http.StatusOK, req)
	default:
		writeError(w, notFound("no harness endpoint %s", route))
	}
}

// certificateRequest replaces the serving certificate: a renewal by the
// same CA, or (NewCA) a certificate clients that trust the old CA refuse.
type certificateRequest struct {
	NewCA bool `json:"newCA"`
}

// propertyCollectorMode chooses how WaitForUpdatesEx finds what a filter
// selects after updates: FullRecollect is upstream's way, collecting every
// filter again per update; false (the default) is patches/0001's.
type propertyCollectorMode struct {
	FullRecollect bool `json:"fullRecollect"`
}

func decodeJSON(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return badRequest("read body: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("decode %T: %v", v, err)
	}
	return nil
}

// exportFault makes one export download (GET on an /export/ URL) misbehave.
type exportFault struct {
	// FailAfterBytes: send this many bytes of the body, then drop the
	// connection (the client sees a truncated body / unexpected EOF).
	FailAfterBytes *int64 `json:"failAfterBytes,omitempty"`
	// Status: answer with this HTTP status and no body instead.
	Status int `json:"status,omitempty"`
	// Times: how many downloads this applies to (default 1).
	Times int `json:"times,omitempty"`
}

func (f *exportFault) validate() error {
	if (f.FailAfterBytes == nil) == (f.Status == 0) {
		return badRequest("a fault needs exactly one of failAfterBytes and status")
	}
	if f.FailAfterBytes != nil && *f.FailAfterBytes < 0 {
		return badRequest("failAfterBytes must be >= 0")
	}
	if f.Status != 0 && (f.Status < 400 || f.Status > 599) {
		return badRequest("status must be 4xx or 5xx")
	}
	if f.Times < 0 {
		return badRequest("times must be >= 0")
	}
	if f.Times == 0 {
		f.Times = 1
	}
	return nil
}

// faultQueue hands queued faults to export downloads in order.
type faultQueue struct {
	mu     sync.Mutex
	faults []exportFault
}

func (q *faultQueue) push(f exportFault) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.faults = append(q.faults, f)
	return len(q.faults)
}

// take returns the next fault (nil if none), consuming one of its times.
func (q *faultQueue) take() *exportFault {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.faults) == 0 {
		return nil
	}
	f := q.faults[0]
	q.faults[0].Times--
	if q.faults[0].Times <= 0 {
		q.faults = q.faults[1:]
	}
	return &f
}

func (q *faultQueue) list() []exportFault {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]exportFault{}, q.faults...)
}

func (q *faultQueue) clear() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.faults = nil
}

func (f exportFault) String() string {
	if f.FailAfterBytes != nil {
		return fmt.Sprintf("drop connection after %d bytes", *f.FailAfterBytes)
	}
	return fmt.Sprintf("status %d", f.Status)
}

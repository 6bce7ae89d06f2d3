// Package libnbd stands in for libguestfs.org/libnbd, a cgo binding that the
// Go module proxy does not serve at any version. CDI's importer calls it only
// from its VDDK (VMware) source, which the test world never runs: the http
// source, the one Harvester's images use, does not touch it. So every call
// here fails, and the names are only those CDI refers to.
package libnbd

import "errors"

// The flags CDI reads, with libnbd's values.
const (
	CMD_FLAG_REQ_ONE = 8
	STATE_HOLE       = 1
	STATE_ZERO       = 2
)

var errAbsent = errors.New("libnbd is not part of this build (test stand-in)")

// LibnbdError is the error type of libnbd's calls.
type LibnbdError struct {
	Op     string
	Errmsg string
	Errno  int
}

func (e *LibnbdError) Error() string { return e.Op + ": " + e.Errmsg }

// ExtentCallback receives block status extents.
type ExtentCallback func(metacontext string, offset uint64, entries []uint32, err *int) int

// PreadOptargs are Pread's optional arguments.
type PreadOptargs struct {
	FlagsSet bool
	Flags    uint32
}

// BlockStatusOptargs are BlockStatus's optional arguments.
type BlockStatusOptargs struct {
	FlagsSet bool
	Flags    uint32
}

// Libnbd is a handle.
type Libnbd struct{}

// Create fails: there is no libnbd.
func Create() (*Libnbd, error) { return nil, errAbsent }

func (*Libnbd) AddMetaContext(string) error               { return errAbsent }
func (*Libnbd) ConnectUri(string) error                   { return errAbsent }
func (*Libnbd) GetSize() (uint64, error)                  { return 0, errAbsent }
func (*Libnbd) Pread([]byte, uint64, *PreadOptargs) error { return errAbsent }
func (*Libnbd) BlockStatus(uint64, uint64, ExtentCallback, *BlockStatusOptargs) error {
	return errAbsent
}
func (*Libnbd) Close() *LibnbdError { return nil }

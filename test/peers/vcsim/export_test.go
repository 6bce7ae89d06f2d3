package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// TestExportWithGovmomiClient drives ExportVm with govmomi's own client code
// (object.VirtualMachine.Export, nfc.Lease.Wait, which uses
// WaitForUpdatesEx, the progress updater and DownloadFile), as govc
// export.ovf does. The Rust suite test/harness/tests/vcsim_export.rs covers
// the rest over plain SOAP.
func TestExportWithGovmomiClient(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)

	m := simulator.VPX()
	m.Machine = 0
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	defer m.Remove()
	pki, err := newServerPKI(tmp, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ext, err := installHandlers(m, extOptions{leaseTimeout: time.Minute, qemuImg: "qemu-img", keepExports: true, tmpDir: tmp, pki: pki})
	if err != nil {
		t.Fatal(err)
	}
	defer ext.close()
	m.Service.TLS = pki.tlsConfig()
	s := m.Service.NewServer()
	defer s.Close()
	ext.setBaseURL(s.URL)

	ctx := context.Background()
	created, err := ext.createVM(ctx, &vmRequest{
		Name:  "govmomi / export",
		Disks: []diskRequest{{CapacityMiB: 8, Content: &diskContent{Seed: 5, DataFraction: 0.5}}},
		NICs:  []nicRequest{{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := fileSHA(t, created.Disks[0].FlatFile)

	u := *s.URL
	c, err := govmomi.NewClient(ctx, &u, true)
	if err != nil {
		t.Fatal(err)
	}
	vm := object.NewVirtualMachine(c.Client, types.ManagedObjectReference{Type: "VirtualMachine", Value: created.Moref})
	name, err := vm.ObjectName(ctx)
	if err != nil || name != "govmomi / export" {
		t.Fatalf("name %q, %v", name, err)
	}

	lease, err := vm.Export(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info, err := lease.Wait(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Items) != 1 {
		t.Fatalf("items: %+v", info.Items)
	}
	updater := lease.StartUpdater(ctx, info)
	vmdk := filepath.Join(tmp, "disk.vmdk")
	if err := lease.DownloadFile(ctx, vmdk, info.Items[0], soap.DefaultDownload); err != nil {
		t.Fatal(err)
	}
	updater.Done()
	if err := lease.Complete(ctx); err != nil {
		t.Fatal(err)
	}

	header := make([]byte, 4)
	f, err := os.Open(vmdk)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadFull(f, header)
	f.Close()
	if !bytes.Equal(header, []byte("KDMV")) {
		t.Fatalf("not a sparse VMDK: %q", header)
	}
	raw := filepath.Join(tmp, "disk.raw")
	if out, err := exec.Command("qemu-img", "convert", "-f", "vmdk", "-O", "raw", vmdk, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	if got := fileSHA(t, raw); got != want {
		t.Fatalf("round trip differs: %x != %x", got, want)
	}

	v := ext.exports.view()
	if v.Open != 0 || len(v.Leases) != 1 || v.Leases[0].State != "done" {
		t.Fatalf("leases: %+v", v)
	}
	// The URL is gone with the lease.
	res, err := c.Client.Get(info.Items[0].URL.String())
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 404 {
		t.Fatalf("after complete: %d", res.StatusCode)
	}
}

func fileSHA(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// TestDataChunks pins the content layout.
func TestDataChunks(t *testing.T) {
	got := dataChunks(10, 42, 0.5)
	if len(got) != 5 {
		t.Fatalf("%v", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("not sorted: %v", got)
		}
	}
	if again := dataChunks(10, 42, 0.5); !equalInts(got, again) {
		t.Fatalf("not deterministic: %v %v", got, again)
	}
	if len(dataChunks(10, 1, 0)) != 0 || len(dataChunks(10, 1, 1)) != 10 {
		t.Fatal("fractions 0 and 1")
	}
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

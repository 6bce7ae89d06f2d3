// Command vcsim runs govmomi's vCenter simulator on loopback for the
// vm-migration test harness.
//
// It prints exactly one JSON line to stdout once the server is ready, then
// serves until SIGINT/SIGTERM or until its stdin reaches EOF, and removes its
// temporary files on the way out.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator" // REST (vAPI) endpoints: /rest, /api
)

// readyLine is the single JSON line printed on stdout when the server is up.
// Its field names are a contract with the Rust test harness.
type readyLine struct {
	URL              string   `json:"url"`
	Username         string   `json:"username"`
	Password         string   `json:"password"`
	CAFile           string   `json:"caFile"`
	CertFile         string   `json:"certFile"`
	Thumbprint       string   `json:"thumbprint"`
	ThumbprintSHA256 string   `json:"thumbprintSha256"`
	Datacenter       string   `json:"datacenter"`
	DatacenterPath   string   `json:"datacenterPath"`
	Datastore        string   `json:"datastore"`
	DatastoreDir     string   `json:"datastoreDir"`
	VMCount          int      `json:"vms"`
	VMPaths          []string `json:"vmPaths"`
	TmpDir           string   `json:"tmpDir"`
	PID              int      `json:"pid"`
	// Extensions of ours (docs/peers.md): the control API and ExportVm.
	HarnessURL          string   `json:"harnessUrl"`
	LeaseTimeoutSeconds float64  `json:"leaseTimeoutSeconds"`
	Features            []string `json:"features"`
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("vcsim: ")
	log.SetOutput(os.Stderr)
	if err := run(); err != nil {
		log.Printf("error: %v", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("vcsim", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (port 0 picks a free port)")
	username := fs.String("username", "user", "login user name")
	password := fs.String("password", "pass", "login password")
	trace := fs.Bool("trace", false, "trace SOAP requests and responses to stderr")
	watchStdin := fs.Bool("stdin-eof-exit", true, "exit when stdin reaches EOF")
	tmpParent := fs.String("tmpdir", "", "parent of the temporary directory holding certificates and datastores (default $TMPDIR or /tmp)")
	leaseTimeout := fs.Duration("lease-timeout", 300*time.Second, "an export HttpNfcLease turns to error without HttpNfcLeaseProgress for this long")
	qemuImg := fs.String("qemu-img", "qemu-img", "qemu-img binary that converts exported disks to streamOptimized VMDKs")
	keepExports := fs.Bool("export-cache", true, "keep converted VMDKs after their lease ends, for the next export of the unchanged disk")
	var inv inventoryFlags
	inv.register(fs)
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *leaseTimeout <= 0 {
		return fmt.Errorf("-lease-timeout must be positive")
	}
	if *username == "" || *password == "" {
		return fmt.Errorf("-username and -password must not be empty")
	}
	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		return fmt.Errorf("-listen %q: %w", *listen, err)
	}

	// Everything we and the simulator write lives under one directory: our
	// certificates directly, the simulator's datastores in the govcsim-* dir
	// Model.Create makes with os.MkdirTemp("") (hence TMPDIR below). So a
	// caller that kills us with SIGKILL has only this one directory to delete.
	tmp, err := os.MkdirTemp(*tmpParent, "vmm-vcsim-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Setenv("TMPDIR", tmp); err != nil {
		return err
	}

	pki, err := newServerPKI(tmp, []string{host, "127.0.0.1", "::1", "localhost"})
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}

	simulator.Trace = *trace

	m, err := inv.newModel()
	if err != nil {
		return err
	}
	if err := m.Create(); err != nil {
		m.Remove()
		return fmt.Errorf("create model: %w", err)
	}
	defer m.Remove()

	ext, err := installHandlers(m, extOptions{
		leaseTimeout: *leaseTimeout,
		qemuImg:      *qemuImg,
		keepExports:  *keepExports,
		tmpDir:       tmp,
		pki:          pki,
	})
	if err != nil {
		return err
	}
	defer ext.close()
	info, err := describeInventory(m)
	if err != nil {
		return err
	}

	m.Service.RegisterEndpoints = true // vapi/simulator's REST endpoints
	m.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*username, *password)}
	m.Service.TLS = pki.tlsConfig()
	srv, err := newServer(m.Service)
	if err != nil {
		return err
	}
	defer shutdown(srv)

	u := *srv.URL
	u.User = nil
	ext.setBaseURL(&u)
	harness := url.URL{Scheme: u.Scheme, Host: u.Host, Path: harnessPrefix}
	line := readyLine{
		URL:              u.String(),
		Username:         *username,
		Password:         *password,
		CAFile:           pki.CAFile,
		CertFile:         pki.CertFile,
		Thumbprint:       pki.Thumbprint(),
		ThumbprintSHA256: pki.ThumbprintSHA256(),
		Datacenter:       info.Datacenter,
		DatacenterPath:   info.DatacenterPath,
		Datastore:        info.Datastore,
		DatastoreDir:     info.DatastoreDir,
		VMCount:          len(info.VMs),
		VMPaths:          info.VMs,
		TmpDir:           tmp,
		PID:              os.Getpid(),

		HarnessURL:          harness.String(),
		LeaseTimeoutSeconds: leaseTimeout.Seconds(),
		Features:            []string{"exportVm", "harnessVms", "harnessNetworks", "harnessLeases", "harnessFaults", "harnessPropertyCollector", "harnessPower", "harnessCertificate"},
	}
	out, err := json.Marshal(line)
	if err != nil {
		return err
	}
	if _, err := os.Stdout.Write(append(out, '\n')); err != nil {
		return err
	}
	_ = os.Stdout.Sync() // unbuffered already; Sync is best effort (fails on pipes)

	stop := make(chan string, 2)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() { stop <- (<-sigs).String() }()
	if *watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop <- "stdin EOF"
		}()
	}
	log.Printf("serving %s (%d VMs); stop with SIGTERM/SIGINT or by closing stdin", u.String(), len(info.VMs))
	log.Printf("stopping: %s", <-stop)
	return nil
}

// newServer starts the HTTPS server; Service.NewServer panics when it cannot
// listen, which we turn into an error so the deferred cleanup still runs.
func newServer(svc *simulator.Service) (srv *simulator.Server, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("start server: %v", r)
		}
	}()
	return svc.NewServer(), nil
}

// shutdown closes the server without waiting forever for long-polling
// requests such as WaitForUpdatesEx.
func shutdown(srv *simulator.Server) {
	done := make(chan struct{})
	go func() {
		srv.CloseClientConnections()
		srv.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		log.Printf("server close timed out; exiting anyway")
	}
}

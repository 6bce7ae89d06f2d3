// Command harvester-webhook serves Harvester's own admission webhooks for
// VirtualMachines (kubevirt.io/v1) and VirtualMachineImages
// (harvesterhci.io/v1beta1) against any kube-apiserver, for the vm-migration
// test world.
//
// It runs Harvester's code, not a copy of its rules: the mutators and
// validators of github.com/harvester/harvester/pkg/webhook/resources/
// {virtualmachine,virtualmachineimage}, built with the caches Harvester's
// pkg/webhook/server passes them, on Harvester's clients constructor
// (pkg/webhook/clients), its cache indexers (pkg/webhook/indexeres), its
// admission handler (pkg/webhook/types) and wrangler's router, at the Harvester
// version go.mod pins. Harvester's cmd/webhook serves every Harvester resource
// (and needs all their CRDs), binds :443 with a certificate of its own and
// registers its webhooks after a fixed 15 s; this program serves only the
// resources above, with the certificate it is given, once its caches synced.
//
//	harvester-webhook serve --kubeconfig F --listen 127.0.0.1:PORT --tls-cert-file C --tls-private-key-file K
//	harvester-webhook webhooks --url https://127.0.0.1:PORT --ca-file CA
//	harvester-webhook crds [--list | --all]
//	harvester-webhook defaults [--harvester-dir DIR]
//
// `serve` logs "ready" on stderr and prints one JSON line on stdout once it
// answers admission reviews. `webhooks` prints the Mutating- and
// ValidatingWebhookConfiguration Harvester registers, reduced to the served
// resources and pointing at --url. `crds` prints the CRDs the server's
// informers need that hack/build-peers.sh does not already make; `crds --list`
// names every CRD the server needs and why. `defaults` prints the objects of a
// default Harvester install the webhooks read (the harvester-system namespace,
// the KubeVirt CR and StorageClasses of Harvester's chart, every Harvester
// Setting with its default).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `usage: harvester-webhook COMMAND [FLAGS]

Harvester's own VirtualMachine and VirtualMachineImage admission webhooks.

commands:
  serve     serve the webhooks over TLS (needs a kube-apiserver with the CRDs of "crds --list")
  webhooks  print the MutatingWebhookConfiguration and ValidatingWebhookConfiguration for a URL
  crds      print the CRDs the server needs that hack/build-peers.sh does not make (--list: all, and why)
  defaults  print the objects of a default Harvester install the webhooks read

Run "harvester-webhook COMMAND -h" for a command's flags.
`

// usageError is a bad command line: reported with exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "serve":
		err = runServe(args)
	case "webhooks":
		err = runWebhooks(args)
	case "crds":
		err = runCRDs(args)
	case "defaults":
		err = runDefaults(args)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(os.Stdout, usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "harvester-webhook: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err == nil {
		return
	}
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	fmt.Fprintf(os.Stderr, "harvester-webhook %s: error: %v\n", cmd, err)
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(os.Stderr, "run \"harvester-webhook %s -h\" for usage\n", cmd)
		os.Exit(2)
	}
	os.Exit(1)
}

// cmdFlags are a command's flags. Parse errors are reported once, by main;
// -h prints the usage to stderr.
type cmdFlags struct {
	*flag.FlagSet
	cmd, synopsis string
}

func newFlagSet(cmd, synopsis string) *cmdFlags {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &cmdFlags{FlagSet: fs, cmd: cmd, synopsis: synopsis}
}

// parse parses ARGS and rejects positional arguments unless allowArgs.
func (f *cmdFlags) parse(args []string, allowArgs bool) error {
	if err := f.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "usage: harvester-webhook %s %s\n\nflags:\n", f.cmd, f.synopsis)
			f.SetOutput(os.Stderr)
			f.PrintDefaults()
			return err
		}
		return usageError{err.Error()}
	}
	if !allowArgs && f.NArg() > 0 {
		return usagef("unexpected argument %q", f.Arg(0))
	}
	return nil
}

package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	ctlkubeovnv1 "github.com/harvester/harvester/pkg/generated/controllers/kubeovn.io/v1"
	"github.com/harvester/harvester/pkg/util"
	"github.com/harvester/harvester/pkg/webhook/clients"
	"github.com/harvester/harvester/pkg/webhook/config"
	"github.com/harvester/harvester/pkg/webhook/indexeres"
	"github.com/harvester/harvester/pkg/webhook/types"
)

// readyLine is the one JSON line serve prints on stdout once it answers
// admission reviews.
type readyLine struct {
	URL            string   `json:"url"`
	MutationPath   string   `json:"mutationPath"`
	ValidationPath string   `json:"validationPath"`
	Mutating       []string `json:"mutating"`
	Validating     []string `json:"validating"`
	PID            int      `json:"pid"`
}

type serveOptions struct {
	kubeconfig, listen, certFile, keyFile string
	syncTimeout                           time.Duration
	exitOnStdinEOF                        bool
	harvester                             config.Options
}

func runServe(args []string) error {
	fs := newFlagSet("serve", "--kubeconfig FILE --listen HOST:PORT --tls-cert-file CERT --tls-private-key-file KEY [flags]")
	var o serveOptions
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the API server whose objects the webhooks read (required)")
	fs.StringVar(&o.listen, "listen", "", "HOST:PORT to serve HTTPS on (required; port 0 picks one, see the ready line)")
	fs.StringVar(&o.certFile, "tls-cert-file", "", "PEM serving certificate (chain) for --listen's host (required)")
	fs.StringVar(&o.keyFile, "tls-private-key-file", "", "PEM private key of --tls-cert-file (required)")
	fs.DurationVar(&o.syncTimeout, "sync-timeout", time.Minute, "give up if the informers have not synced by then")
	fs.BoolVar(&o.exitOnStdinEOF, "exit-on-stdin-eof", false, "also stop when stdin reaches EOF (a harness holding the pipe)")
	debug := fs.Bool("debug", false, "log every admission request, its verdict and its JSON patch")
	// Harvester's webhook options (cmd/webhook flags; defaults as its chart sets them).
	fs.StringVar(&o.harvester.Namespace, "namespace", util.HarvesterSystemNamespaceName, "Harvester's namespace (its webhook's NAMESPACE)")
	fs.IntVar(&o.harvester.Threadiness, "threadiness", 5, "controller threads (Harvester's --threadiness)")
	fs.StringVar(&o.harvester.HarvesterControllerUsername, "controller-user", "system:serviceaccount:harvester-system:harvester",
		"user whose requests Harvester treats as its controller's (HARVESTER_CONTROLLER_USER_NAME)")
	fs.StringVar(&o.harvester.GarbageCollectionUsername, "gc-user", "system:serviceaccount:kube-system:generic-garbage-collector",
		"user Harvester treats as the garbage collector (GARBAGE_COLLECTION_USER_NAME)")
	if err := fs.parse(args, false); err != nil {
		return err
	}
	var missing []string
	for flagName, v := range map[string]string{"kubeconfig": o.kubeconfig, "listen": o.listen, "tls-cert-file": o.certFile, "tls-private-key-file": o.keyFile} {
		if v == "" {
			missing = append(missing, "--"+flagName)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return usagef("missing %s", strings.Join(missing, ", "))
	}
	if _, _, err := net.SplitHostPort(o.listen); err != nil {
		return usagef("--listen %q: %v (want HOST:PORT)", o.listen, err)
	}
	if o.syncTimeout <= 0 {
		return usagef("--sync-timeout must be positive")
	}
	logrus.SetOutput(os.Stderr)
	logrus.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "15:04:05.000"})
	if *debug {
		logrus.SetLevel(logrus.DebugLevel)
	}
	return serve(o)
}

func serve(o serveOptions) error {
	cert, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
	if err != nil {
		return fmt.Errorf("TLS certificate: %w", err)
	}
	restCfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return fmt.Errorf("--kubeconfig %s: %w", o.kubeconfig, err)
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	defer ln.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.exitOnStdinEOF {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			logrus.Info("stdin closed: stopping")
			stop()
		}()
	}

	subnets, err := preflight(ctx, restCfg)
	if err != nil {
		return err
	}

	// Harvester's own wiring (pkg/webhook/server ListenAndServe): its clients,
	// its indexers, the admitters on their caches, wrangler routers.
	c, err := clients.New(ctx, restCfg, o.harvester.Threadiness, subnets)
	if err != nil {
		return fmt.Errorf("Harvester clients: %w", err)
	}
	indexeres.RegisterIndexers(c)
	var subnetCache ctlkubeovnv1.SubnetCache
	if subnets {
		subnetCache = c.KubeovnFactory.Kubeovn().V1().Subnet().Cache()
	}
	s := newServed(c, subnetCache)
	mutation, validation := s.routers(&o.harvester)

	// Harvester ends with clients.Start, which also runs controllers: its only
	// handler is the certificate Secret's, which this program does not have.
	// The admitters read caches only, so starting and syncing those suffices.
	if err := syncCaches(ctx, c, o.syncTimeout); err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.Handle(mutationPath, mutation)
	mux.Handle(validationPath, validation)
	srv := &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}},
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          log.New(logrus.StandardLogger().WriterLevel(logrus.WarnLevel), "", 0),
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ln, "", "") }()

	ready := readyLine{
		URL:            "https://" + ln.Addr().String(),
		MutationPath:   mutationPath,
		ValidationPath: validationPath,
		Mutating:       resourceNames(s.mutationResources()),
		Validating:     resourceNames(s.validationResources()),
		PID:            os.Getpid(),
	}
	logrus.Infof("ready: Harvester %s webhooks on %s: mutation %s %v, validation %s %v",
		harvesterVersion(), ready.URL, mutationPath, ready.Mutating, validationPath, ready.Validating)
	line, _ := json.Marshal(ready)
	fmt.Fprintf(os.Stdout, "%s\n", line)

	select {
	case err := <-served:
		return fmt.Errorf("HTTPS server: %w", err)
	case <-ctx.Done():
	}
	logrus.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// preflight checks that the API server answers and serves every CRD the
// informers need (else they never sync), and reports whether Kube-OVN's
// Subnet CRD exists (Harvester's isSubnetsCRDPresent).
func preflight(ctx context.Context, restCfg *rest.Config) (subnets bool, err error) {
	cfg := rest.CopyConfig(restCfg)
	cfg.Timeout = 15 * time.Second
	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return false, err
	}
	if _, err := disco.ServerVersion(); err != nil {
		return false, fmt.Errorf("API server %s: %w", restCfg.Host, err)
	}
	var missing []string
	for _, r := range requiredCRDs {
		ok, err := servesKind(disco, r.gvk)
		if err != nil {
			return false, err
		}
		if !ok {
			from := "harvester-webhook crds"
			if r.peersFile != "" {
				from = "hack/build-peers.sh " + r.peersFile
			}
			missing = append(missing, fmt.Sprintf("%s (%s)", r.name, from))
		}
	}
	if len(missing) > 0 {
		return false, fmt.Errorf("the API server lacks CRDs the webhooks' informers need (they would never sync):\n  %s\nsee `harvester-webhook crds --list`",
			strings.Join(missing, "\n  "))
	}
	ext, err := apiextclient.NewForConfig(cfg)
	if err != nil {
		return false, err
	}
	crd, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, subnetsCRDName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("look up CRD %s: %w", subnetsCRDName, err)
	}
	if crd.DeletionTimestamp != nil {
		return false, nil
	}
	logrus.Infof("%s exists: the VM mutator reads Kube-OVN subnets", subnetsCRDName)
	return true, nil
}

func servesKind(disco discovery.DiscoveryInterface, gvk schema.GroupVersionKind) (bool, error) {
	list, err := disco.ServerResourcesForGroupVersion(gvk.GroupVersion().String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discover %s: %w", gvk.GroupVersion(), err)
	}
	for _, r := range list.APIResources {
		if r.Kind == gvk.Kind && !strings.Contains(r.Name, "/") {
			return true, nil
		}
	}
	return false, nil
}

// builtinGroups are the API groups of the built-in kinds the server watches.
var builtinGroups = map[string]bool{"": true, "storage.k8s.io": true}

// syncCaches starts every informer the admitters and indexers asked for and
// waits for them, naming any that does not sync within TIMEOUT.
func syncCaches(ctx context.Context, c *clients.Clients, timeout time.Duration) error {
	cf := c.SharedControllerFactory.SharedCacheFactory()
	if err := cf.Start(ctx); err != nil {
		return fmt.Errorf("start informers: %w", err)
	}
	syncCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t0 := time.Now()
	synced := cf.WaitForCacheSync(syncCtx)
	known := map[schema.GroupVersionKind]bool{}
	for _, r := range requiredCRDs {
		known[r.gvk] = true
	}
	var names, unsynced []string
	for gvk, ok := range synced {
		name := gvk.Kind + "." + gvk.Group
		if gvk.Group == "" {
			name = gvk.Kind
		}
		names = append(names, name)
		if !ok {
			unsynced = append(unsynced, gvk.String())
		}
		if !known[gvk] && !builtinGroups[gvk.Group] && gvk.Group != "kubeovn.io" {
			logrus.Warnf("informer for %s is not in this program's CRD list (crds.go): keep requiredCRDs in step with Harvester", gvk)
		}
	}
	sort.Strings(names)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if len(unsynced) > 0 {
		sort.Strings(unsynced)
		return fmt.Errorf("informers not synced within %s: %s", timeout, strings.Join(unsynced, ", "))
	}
	logrus.Infof("%d informers synced in %s: %s", len(names), time.Since(t0).Round(time.Millisecond), strings.Join(names, ", "))
	return nil
}

func resourceNames(rs []types.Resource) []string {
	var out []string
	for _, r := range rs {
		for _, n := range r.Names {
			resource, sub, _ := strings.Cut(n, "/")
			name := resource + "." + r.APIGroup
			if sub != "" {
				name += "/" + sub
			}
			out = append(out, name)
		}
	}
	return out
}

// harvesterVersion is the Harvester module version this binary was built with.
func harvesterVersion() string {
	if v, err := harvesterModuleVersion(); err == nil {
		return v
	}
	return "(unknown version)"
}

package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	admissionregv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	harvesterwebhook "github.com/harvester/harvester/pkg/webhook"
	"github.com/harvester/harvester/pkg/webhook/types"
)

// What Harvester's pkg/webhook/server/server.go registers, which keeps these
// unexported (the paths, the failure policies, the side effects) or literal
// in its listenAndServe (the webhook names, the review versions).
// webhooks_test.go checks each against that file of the pinned Harvester.
// Harvester sets no timeoutSeconds, matchPolicy or selectors: the API server
// defaults them (10 s, Equivalent, everything).
const (
	validationPath = "/v1/webhook/validation"
	mutationPath   = "/v1/webhook/mutation"
	validatorName  = "validator.harvesterhci.io"
	mutatorName    = "mutator.harvesterhci.io"
)

var (
	failPolicyFail          = admissionregv1.Fail   // the validator
	failPolicyIgnore        = admissionregv1.Ignore // the mutator
	sideEffectClassNone     = admissionregv1.SideEffectClassNone
	admissionReviewVersions = []string{"v1", "v1beta1"}
)

func runWebhooks(args []string) error {
	fs := newFlagSet("webhooks", "--url https://HOST:PORT --ca-file CA.pem")
	base := fs.String("url", "", "base URL of a running serve (https://HOST:PORT); the webhooks' paths are appended")
	caFile := fs.String("ca-file", "", "PEM file of the CA that signed serve's certificate (the caBundle)")
	if err := fs.parse(args, false); err != nil {
		return err
	}
	if *base == "" || *caFile == "" {
		return usagef("--url and --ca-file are required")
	}
	baseURL, err := webhookBaseURL(*base)
	if err != nil {
		return usageError{err.Error()}
	}
	ca, err := readCABundle(*caFile)
	if err != nil {
		return err
	}
	c, err := offlineClients()
	if err != nil {
		return err
	}
	s := newServed(c, nil)
	mutating, validating := webhookConfigurations(baseURL, ca, s.mutationResources(), s.validationResources())
	for _, obj := range []any{mutating, validating} {
		if err := writeYAML(os.Stdout, obj); err != nil {
			return err
		}
	}
	return nil
}

// webhookBaseURL checks that RAW is an https URL without query or fragment
// and returns it without a trailing slash.
func webhookBaseURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("--url %q: %v", raw, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("--url %q: want https://HOST:PORT (the API server only calls webhooks over https)", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("--url %q: must not have user info, a query or a fragment", raw)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// readCABundle reads FILE and checks that it holds PEM certificates only.
func readCABundle(file string) ([]byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	rest, n := data, 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("--ca-file %s: holds a %q PEM block, want certificates only", file, block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return nil, fmt.Errorf("--ca-file %s: %w", file, err)
		}
		n++
	}
	if n == 0 || strings.TrimSpace(string(rest)) != "" {
		return nil, fmt.Errorf("--ca-file %s: not a PEM certificate file", file)
	}
	return data, nil
}

// webhookConfigurations builds the two configurations as Harvester's
// listenAndServe does, with the client config pointing at BASE+path instead
// of Harvester's Service (harvester-webhook:443 in its namespace).
func webhookConfigurations(base string, caBundle []byte, mutation, validation []types.Resource) (*admissionregv1.MutatingWebhookConfiguration, *admissionregv1.ValidatingWebhookConfiguration) {
	mutationURL := base + mutationPath
	validationURL := base + validationPath
	validating := &admissionregv1.ValidatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: admissionregv1.SchemeGroupVersion.String(), Kind: "ValidatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: harvesterwebhook.ValidatingWebhookName},
		Webhooks: []admissionregv1.ValidatingWebhook{{
			Name:                    validatorName,
			ClientConfig:            admissionregv1.WebhookClientConfig{URL: &validationURL, CABundle: caBundle},
			Rules:                   buildRules(validation),
			FailurePolicy:           &failPolicyFail,
			SideEffects:             &sideEffectClassNone,
			AdmissionReviewVersions: admissionReviewVersions,
		}},
	}
	mutating := &admissionregv1.MutatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: admissionregv1.SchemeGroupVersion.String(), Kind: "MutatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: harvesterwebhook.MutatingWebhookName},
		Webhooks: []admissionregv1.MutatingWebhook{{
			Name:                    mutatorName,
			ClientConfig:            admissionregv1.WebhookClientConfig{URL: &mutationURL, CABundle: caBundle},
			Rules:                   buildRules(mutation),
			FailurePolicy:           &failPolicyIgnore,
			SideEffects:             &sideEffectClassNone,
			AdmissionReviewVersions: admissionReviewVersions,
		}},
	}
	return mutating, validating
}

// buildRules is Harvester's (*AdmissionWebhookServer).buildRules: one rule per
// admitter resource.
func buildRules(resources []types.Resource) []admissionregv1.RuleWithOperations {
	rules := make([]admissionregv1.RuleWithOperations, 0, len(resources))
	for _, rsc := range resources {
		scope := rsc.Scope
		rules = append(rules, admissionregv1.RuleWithOperations{
			Operations: rsc.OperationTypes,
			Rule: admissionregv1.Rule{
				APIGroups:   []string{rsc.APIGroup},
				APIVersions: []string{rsc.APIVersion},
				Resources:   rsc.Names,
				Scope:       &scope,
			},
		})
	}
	return rules
}

// writeYAML writes OBJ as one YAML document as a client would create it:
// without the null creationTimestamp and the (empty) status of an in-memory
// object.
func writeYAML(w io.Writer, obj any) error {
	out, err := yaml.Marshal(obj)
	if err != nil {
		return err
	}
	var m map[string]any
	if err := yaml.Unmarshal(out, &m); err != nil {
		return err
	}
	if meta, ok := m["metadata"].(map[string]any); ok && meta["creationTimestamp"] == nil {
		delete(meta, "creationTimestamp")
	}
	delete(m, "status")
	if spec, ok := m["spec"].(map[string]any); ok && len(spec) == 0 {
		delete(m, "spec")
	}
	if out, err = yaml.Marshal(m); err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "---\n%s", out)
	return err
}

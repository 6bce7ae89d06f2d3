package main

// These tests hold the few things this program must restate (Harvester keeps
// them unexported or literal) to the source of the pinned Harvester, read from
// the module cache: if a Harvester bump changes one, they fail.

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
)

type goFile struct {
	fset *token.FileSet
	file *ast.File
}

// harvesterFile parses REL in the pinned Harvester module.
func harvesterFile(t *testing.T, rel string) goFile {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", harvesterModule).Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", harvesterModule, err)
	}
	return parseGo(t, filepath.Join(strings.TrimSpace(string(out)), filepath.FromSlash(rel)))
}

func parseGo(t *testing.T, path string) goFile {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	return goFile{fset, f}
}

func (g goFile) src(n ast.Node) string {
	var b bytes.Buffer
	if err := printer.Fprint(&b, g.fset, n); err != nil {
		panic(err)
	}
	return b.String()
}

// vars returns the package-level `var name = value` of G, as source.
func (g goFile) vars() map[string]string {
	out := map[string]string{}
	for _, d := range g.file.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.VAR {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if i < len(vs.Values) {
					out[name.Name] = g.src(vs.Values[i])
				}
			}
		}
	}
	return out
}

// literals returns, for each composite literal of type SEL (e.g.
// "v1.ValidatingWebhook") in G, its fields as key -> source.
func (g goFile) literals(sel string) []map[string]string {
	var out []map[string]string
	record := func(cl *ast.CompositeLit) {
		fields := map[string]string{}
		for _, e := range cl.Elts {
			if kv, ok := e.(*ast.KeyValueExpr); ok {
				fields[g.src(kv.Key)] = g.src(kv.Value)
			}
		}
		out = append(out, fields)
	}
	ast.Inspect(g.file, func(n ast.Node) bool {
		cl, ok := n.(*ast.CompositeLit)
		if !ok || cl.Type == nil {
			return true
		}
		switch g.src(cl.Type) {
		case sel:
			record(cl)
		case "[]" + sel: // elements with the type elided
			for _, e := range cl.Elts {
				if el, ok := e.(*ast.CompositeLit); ok && el.Type == nil {
					record(el)
				}
			}
		}
		return true
	})
	return out
}

func (g goFile) funcBody(name string) string {
	for _, d := range g.file.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == name {
			return g.src(fd.Body)
		}
	}
	return ""
}

// calls returns the arguments (as source) of every call of PKG.FN in G.
func (g goFile) calls(pkg, fn string) [][]string {
	var out [][]string
	ast.Inspect(g.file, func(n ast.Node) bool {
		ce, ok := n.(*ast.CallExpr)
		if !ok || g.src(ce.Fun) != pkg+"."+fn {
			return true
		}
		var args []string
		for _, a := range ce.Args {
			args = append(args, g.src(a))
		}
		out = append(out, args)
		return true
	})
	return out
}

// assignments returns `name := value` statements in G, as source.
func (g goFile) assignments() map[string]string {
	out := map[string]string{}
	ast.Inspect(g.file, func(n ast.Node) bool {
		as, ok := n.(*ast.AssignStmt)
		if ok && as.Tok == token.DEFINE && len(as.Lhs) == 1 && len(as.Rhs) == 1 {
			out[g.src(as.Lhs[0])] = g.src(as.Rhs[0])
		}
		return true
	})
	return out
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestWebhookConfigurationsAreHarvesters(t *testing.T) {
	server := harvesterFile(t, "pkg/webhook/server/server.go")
	vars := server.vars()
	for name, want := range map[string]string{
		"validationPath":      strconv.Quote(validationPath),
		"mutationPath":        strconv.Quote(mutationPath),
		"failPolicyFail":      "v1." + string(failPolicyFail),
		"failPolicyIgnore":    "v1." + string(failPolicyIgnore),
		"sideEffectClassNone": "v1.SideEffectClassNone",
	} {
		if vars[name] != want {
			t.Errorf("Harvester's server.go has %s = %s, this program %s", name, vars[name], want)
		}
	}
	if sideEffectClassNone != "None" {
		t.Errorf("sideEffectClassNone = %q", sideEffectClassNone)
	}

	reviewVersions := "[]string{" + strings.Join(quoteAll(admissionReviewVersions), ", ") + "}"
	for _, c := range []struct {
		typ, name, policy, configName string
	}{
		{"v1.ValidatingWebhook", validatorName, "&failPolicyFail", "webhook.ValidatingWebhookName"},
		{"v1.MutatingWebhook", mutatorName, "&failPolicyIgnore", "webhook.MutatingWebhookName"},
	} {
		lits := server.literals(c.typ)
		if len(lits) != 1 {
			t.Fatalf("Harvester's server.go builds %d %s, want 1", len(lits), c.typ)
		}
		got := lits[0]
		want := map[string]string{
			"Name":                    strconv.Quote(c.name),
			"FailurePolicy":           c.policy,
			"SideEffects":             "&sideEffectClassNone",
			"AdmissionReviewVersions": reviewVersions,
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("Harvester's %s has %s: %s, this program %s", c.typ, k, got[k], v)
			}
		}
		// Every other field is one this program sets differently on purpose.
		if ks := keys(got); !reflect.DeepEqual(ks, []string{"AdmissionReviewVersions", "ClientConfig", "FailurePolicy", "Name", "Rules", "SideEffects"}) {
			t.Errorf("Harvester's %s sets %v: update webhookConfigurations", c.typ, ks)
		}
		if !strings.Contains(server.src(server.file), "Name: "+c.configName) {
			t.Errorf("Harvester's configuration is no longer named %s", c.configName)
		}
	}
	for _, cc := range server.literals("v1.WebhookClientConfig") {
		if ks := keys(cc); !reflect.DeepEqual(ks, []string{"CABundle", "Service"}) {
			t.Errorf("Harvester's client config sets %v: update webhookConfigurations", ks)
		}
	}

	ours := parseGo(t, "webhooks.go")
	norm := func(s string) string {
		var lines []string
		for _, l := range strings.Split(s, "\n") {
			if strings.TrimSpace(l) != "" && !strings.Contains(l, "logrus.") {
				lines = append(lines, l)
			}
		}
		return strings.ReplaceAll(strings.Join(lines, "\n"), "admissionregv1.", "v1.")
	}
	if h, o := norm(server.funcBody("buildRules")), norm(ours.funcBody("buildRules")); h != o {
		t.Errorf("buildRules differs from Harvester's:\nHarvester:\n%s\nours:\n%s", h, o)
	}
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}

// TestAdmittersAreWiredAsHarvester checks that the admitters get exactly the
// arguments Harvester's server.Mutation and server.Validation pass them, and
// that addHandler is Harvester's.
func TestAdmittersAreWiredAsHarvester(t *testing.T) {
	mutation := harvesterFile(t, "pkg/webhook/server/mutation.go")
	validation := harvesterFile(t, "pkg/webhook/server/validation.go")
	ours := parseGo(t, "admitters.go")
	for _, c := range []struct {
		harvester goFile
		pkg, fn   string
	}{
		{mutation, "virtualmachine", "NewMutator"},
		{mutation, "virtualmachineimage", "NewMutator"},
		{validation, "virtualmachine", "NewValidator"},
		{validation, "virtualmachineimage", "NewValidator"},
	} {
		h, o := c.harvester.calls(c.pkg, c.fn), ours.calls(c.pkg, c.fn)
		if len(h) != 1 || len(o) != 1 {
			t.Fatalf("%s.%s: Harvester calls it %d times, this program %d", c.pkg, c.fn, len(h), len(o))
		}
		if !reflect.DeepEqual(h[0], o[0]) {
			t.Errorf("%s.%s arguments differ:\nHarvester: %q\nours:      %q", c.pkg, c.fn, h[0], o[0])
		}
	}
	// The locals the mutators' arguments name.
	h, o := mutation.assignments(), ours.assignments()
	for _, name := range []string{"settingCache", "storageClassCache", "nadCache", "kubevirtCache"} {
		if h[name] == "" || h[name] != o[name] {
			t.Errorf("%s: Harvester %q, ours %q", name, h[name], o[name])
		}
	}
	if hb, ob := mutation.funcBody("addHandler"), ours.funcBody("addHandler"); hb != ob {
		t.Errorf("addHandler differs from Harvester's:\nHarvester:\n%s\nours:\n%s", hb, ob)
	}
}

// Command crd-extract copies one CustomResourceDefinition, verbatim, out of a
// (possibly multi-document) YAML manifest shipped by an upstream module.
//
//	crd-extract -in FILE -name plural.group
//
// It checks that the document is an apiextensions.k8s.io/v1
// CustomResourceDefinition with that metadata.name and prints the document's
// original text (prefixed by "---") to stdout.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/yaml"
)

type crdHeader struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

// splitDocuments splits a YAML stream on "---" separator lines.
func splitDocuments(data []byte) []string {
	var docs []string
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1024*1024), 64*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimRight(line, " \t") == "---" {
			docs = append(docs, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	docs = append(docs, cur.String())
	return docs
}

func main() {
	in := flag.String("in", "", "YAML manifest to read")
	name := flag.String("name", "", "metadata.name of the CRD to extract")
	flag.Parse()
	if *in == "" || *name == "" {
		fmt.Fprintln(os.Stderr, "usage: crd-extract -in FILE -name NAME")
		os.Exit(2)
	}
	data, err := os.ReadFile(*in)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crd-extract:", err)
		os.Exit(1)
	}
	var found []string
	for _, doc := range splitDocuments(data) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var h crdHeader
		if err := yaml.Unmarshal([]byte(doc), &h); err != nil {
			fmt.Fprintf(os.Stderr, "crd-extract: %s: %v\n", *in, err)
			os.Exit(1)
		}
		if h.Kind == "CustomResourceDefinition" && h.Metadata.Name == *name {
			if h.APIVersion != "apiextensions.k8s.io/v1" {
				fmt.Fprintf(os.Stderr, "crd-extract: %s is %s, want apiextensions.k8s.io/v1\n", *name, h.APIVersion)
				os.Exit(1)
			}
			found = append(found, doc)
		}
	}
	if len(found) != 1 {
		fmt.Fprintf(os.Stderr, "crd-extract: %d CRDs named %q in %s, want exactly 1\n", len(found), *name, *in)
		os.Exit(1)
	}
	fmt.Print("---\n" + found[0])
}

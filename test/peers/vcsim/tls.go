package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// serverPKI is a throw-away CA plus a serving certificate signed by it.
//
// The simulator's built-in certificate is a single self-signed certificate that
// is its own CA. Verifiers such as webpki/rustls refuse a CA certificate used as
// an end-entity certificate, so we mint a proper two-level chain per run.
type serverPKI struct {
	CAFile   string // PEM of the CA certificate: what clients should trust
	CertFile string // PEM of the serving (leaf) certificate
	KeyFile  string // PEM (PKCS#8) of the serving key
	Leaf     tls.Certificate
	leafDER  []byte
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// newServerPKI writes ca.pem, server-cert.pem and server-key.pem into dir.
// The serving certificate is valid for every name in hosts (IPs and DNS names).
func newServerPKI(dir string, hosts []string) (*serverPKI, error) {
	now := time.Now()

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caSerial, err := newSerial()
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          caSerial,
		Subject:               pkix.Name{Organization: []string{"vm-migration test"}, CommonName: "vcsim test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}

	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leafSerial, err := newSerial()
	if err != nil {
		return nil, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber:          leafSerial,
		Subject:               pkix.Name{Organization: []string{"vm-migration test"}, CommonName: "vcsim"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	seen := map[string]bool{}
	for _, h := range hosts {
		if seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			leafTmpl.IPAddresses = append(leafTmpl.IPAddresses, ip)
		} else if h != "" {
			leafTmpl.DNSNames = append(leafTmpl.DNSNames, h)
		}
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		return nil, err
	}

	p := &serverPKI{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "server-cert.pem"),
		KeyFile:  filepath.Join(dir, "server-key.pem"),
		leafDER:  leafDER,
	}
	if err := writePEM(p.CAFile, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	if err := writePEM(p.CertFile, "CERTIFICATE", leafDER); err != nil {
		return nil, err
	}
	if err := writePEM(p.KeyFile, "PRIVATE KEY", keyDER); err != nil {
		return nil, err
	}
	// Serve the chain (leaf, CA) so clients that only know the CA can build the path.
	p.Leaf = tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: leafKey}
	return p, nil
}

func colonHex(sum []byte) string {
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// Thumbprint is the SHA-1 fingerprint of the serving certificate in the
// colon-separated upper-case form vSphere uses (e.g. for sslThumbprint).
func (p *serverPKI) Thumbprint() string {
	sum := sha1.Sum(p.leafDER)
	return colonHex(sum[:])
}

// ThumbprintSHA256 is the SHA-256 fingerprint of the serving certificate.
func (p *serverPKI) ThumbprintSHA256() string {
	sum := sha256.Sum256(p.leafDER)
	return colonHex(sum[:])
}

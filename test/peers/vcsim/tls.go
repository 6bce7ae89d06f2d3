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
	"sync"
	"time"
)

// serverPKI is a throw-away CA plus a serving certificate signed by it.
//
// The simulator's built-in certificate is a single self-signed certificate that
// is its own CA. Verifiers such as webpki/rustls refuse a CA certificate used as
// an end-entity certificate, so we mint a proper two-level chain per run.
// rotate replaces the serving certificate while the server runs (a renewal,
// or a vCenter given a certificate from another CA): the handshakes after it
// see the new one (tlsConfig), connections already open keep the old.
type serverPKI struct {
	CAFile   string // PEM of the CA certificate: what clients should trust
	CertFile string // PEM of the serving (leaf) certificate
	KeyFile  string // PEM (PKCS#8) of the serving key
	hosts    []string

	mu      sync.Mutex
	caKey   *ecdsa.PrivateKey
	caCert  *x509.Certificate
	leaf    tls.Certificate
	leafDER []byte
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
	p := &serverPKI{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "server-cert.pem"),
		KeyFile:  filepath.Join(dir, "server-key.pem"),
		hosts:    hosts,
	}
	if err := p.rotate(true); err != nil {
		return nil, err
	}
	return p, nil
}

// rotate mints a new serving certificate, signed by a new CA when newCA,
// and rewrites the files.
func (p *serverPKI) rotate(newCA bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if newCA || p.caKey == nil {
		caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		caSerial, err := newSerial()
		if err != nil {
			return err
		}
		caTmpl := &x509.Certificate{
			SerialNumber:          caSerial,
			Subject:               pkix.Name{Organization: []string{"vm-migration test"}, CommonName: "vcsim test CA " + caSerial.Text(16)[:8]},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
			BasicConstraintsValid: true,
			IsCA:                  true,
			MaxPathLenZero:        true,
		}
		caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
		if err != nil {
			return err
		}
		caCert, err := x509.ParseCertificate(caDER)
		if err != nil {
			return err
		}
		if err := writePEM(p.CAFile, "CERTIFICATE", caDER); err != nil {
			return err
		}
		p.caKey, p.caCert = caKey, caCert
	}

	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	leafSerial, err := newSerial()
	if err != nil {
		return err
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
	for _, h := range p.hosts {
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
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, p.caCert, &leafKey.PublicKey, p.caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		return err
	}
	if err := writePEM(p.CertFile, "CERTIFICATE", leafDER); err != nil {
		return err
	}
	if err := writePEM(p.KeyFile, "PRIVATE KEY", keyDER); err != nil {
		return err
	}
	// Serve the chain (leaf, CA) so clients that only know the CA can build the path.
	p.leaf = tls.Certificate{Certificate: [][]byte{leafDER, p.caCert.Raw}, PrivateKey: leafKey}
	p.leafDER = leafDER
	return nil
}

// tlsConfig serves the current certificate at every handshake. The
// simulator's server adds to the returned config (client certificates), so
// each handshake clones it as it is then.
func (p *serverPKI) tlsConfig() *tls.Config {
	p.mu.Lock()
	defer p.mu.Unlock()
	base := &tls.Config{Certificates: []tls.Certificate{p.leaf}, MinVersion: tls.VersionTLS12}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		config := base.Clone()
		config.GetConfigForClient = nil
		p.mu.Lock()
		defer p.mu.Unlock()
		config.Certificates = []tls.Certificate{p.leaf}
		return config, nil
	}
	return base
}

// caPEM is the PEM of the CA that signs the current serving certificate.
func (p *serverPKI) caPEM() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.caCert.Raw}))
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
	p.mu.Lock()
	defer p.mu.Unlock()
	sum := sha1.Sum(p.leafDER)
	return colonHex(sum[:])
}

// ThumbprintSHA256 is the SHA-256 fingerprint of the serving certificate.
func (p *serverPKI) ThumbprintSHA256() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	sum := sha256.Sum256(p.leafDER)
	return colonHex(sum[:])
}

package certs

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ParsePEM returns the certificates in data in order. Blocks that are not
// certificates (private keys in an OUTPUT_CERTS directory) are skipped, so a
// key is never parsed or shown. Bytes outside PEM blocks are ignored, as
// openssl does; data with no certificate at all is an error.
func ParsePEM(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := data
	for n := 1; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d is not a valid certificate: %w", n, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		if len(bytes.TrimSpace(data)) == 0 {
			return nil, errors.New("no data")
		}
		return nil, errors.New("no PEM certificate found")
	}
	return out, nil
}

// EncodePEM is the inverse of ParsePEM.
func EncodePEM(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// rootFileNames are the names Istio gives trust-root files: the legacy
// /etc/certs mount, OUTPUT_CERTS and the istio-ca-root-cert ConfigMap.
var rootFileNames = map[string]bool{"root-cert.pem": true, "ca-cert.pem": true, "root-cert.crt": true}

// LoadFiles builds bundles from files and directories. PEM files together
// make one bundle: files named like Istio's root files (root-cert.pem) hold
// trust roots, the rest is the chain, leaf first. In a directory every
// *.pem, *.crt and *.cert file is read. A JSON file is a saved dump (see
// ParseDump) and gives its own bundles.
func LoadFiles(paths []string) ([]*Bundle, error) {
	if len(paths) == 0 {
		return nil, errors.New("no --file given")
	}
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("reading --file %s: %w", p, err)
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, fmt.Errorf("reading --file directory %s: %w", p, err)
		}
		var found []string
		for _, e := range entries {
			switch strings.ToLower(filepath.Ext(e.Name())) {
			case ".pem", ".crt", ".cert":
				if !e.IsDir() {
					found = append(found, filepath.Join(p, e.Name()))
				}
			}
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("--file directory %s has no *.pem, *.crt or *.cert files", p)
		}
		// Chain files before root files, whatever their names sort as.
		sort.SliceStable(found, func(i, j int) bool {
			return !rootFileNames[filepath.Base(found[i])] && rootFileNames[filepath.Base(found[j])]
		})
		files = append(files, found...)
	}
	var out []*Bundle
	var pemFiles []string
	b := &Bundle{Source: SourceFile}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading --file %s: %w", f, err)
		}
		if IsDump(data) {
			dumps, kind, err := ParseDump(data)
			if err != nil {
				return nil, fmt.Errorf("reading --file %s: %w", f, err)
			}
			for _, d := range dumps {
				d.Origin = fmt.Sprintf("file %s (%s)", f, kind)
			}
			out = append(out, dumps...)
			continue
		}
		if !bytes.Contains(data, []byte("-----BEGIN CERTIFICATE-----")) && isKeyOnly(data) {
			continue // key.pem in an OUTPUT_CERTS directory
		}
		certs, err := ParsePEM(data)
		if err != nil {
			return nil, fmt.Errorf("reading --file %s: %w; --file takes PEM certificates or %s", f, err, DumpFormats)
		}
		pemFiles = append(pemFiles, f)
		if rootFileNames[filepath.Base(f)] {
			b.Roots = append(b.Roots, certs...)
		} else {
			b.Chain = append(b.Chain, certs...)
		}
	}
	if len(pemFiles) == 0 && len(out) > 0 {
		return out, nil
	}
	b.Origin = "file " + strings.Join(pemFiles, ", ")
	if len(pemFiles) == len(files) {
		b.Origin = "file " + strings.Join(paths, ", ")
	}
	b, err := splitRoots(b)
	if err != nil {
		return nil, err
	}
	return append([]*Bundle{b}, out...), nil
}

func isKeyOnly(data []byte) bool {
	block, _ := pem.Decode(data)
	return block != nil && strings.Contains(block.Type, "PRIVATE KEY")
}

// splitRoots makes a bundle whole when the roots were not given apart: a
// self-signed CA at the end of the chain is the root (Istio appends the root
// to cert-chain.pem when istiod signs with its self-signed CA).
func splitRoots(b *Bundle) (*Bundle, error) {
	if len(b.Chain) == 0 && len(b.Roots) > 0 {
		return nil, errors.New("only root certificates found, no workload certificate chain")
	}
	if len(b.Chain) == 0 {
		return nil, errors.New("no certificates found")
	}
	if len(b.Roots) == 0 {
		for len(b.Chain) > 1 && isSelfSignedCA(b.Chain[len(b.Chain)-1]) {
			b.Roots = append(b.Roots, b.Chain[len(b.Chain)-1])
			b.Chain = b.Chain[:len(b.Chain)-1]
		}
	} else {
		// A root repeated at the end of the chain is shown once, as root.
		for len(b.Chain) > 1 && containsCert(b.Roots, b.Chain[len(b.Chain)-1]) {
			b.Chain = b.Chain[:len(b.Chain)-1]
		}
	}
	return b, nil
}

func isSelfSignedCA(c *x509.Certificate) bool {
	return c.IsCA && bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}

func containsCert(list []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range list {
		if x.Equal(c) {
			return true
		}
	}
	return false
}

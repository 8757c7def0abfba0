package certs

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// States of a ztunnel identity (its admin /config_dump "certificates").
const (
	ZtunnelAvailable    = "Available"
	ZtunnelInitializing = "Initializing"
	ZtunnelUnavailable  = "Unavailable"
)

// ztunnelCerts is one entry of ztunnel's certificates[]: camelCase since
// ztunnel 1.22, snake_case before.
type ztunnelCerts struct {
	Identity       string        `json:"identity"`
	State          string        `json:"state"`
	CertChain      []ztunnelCert `json:"certChain"`
	CertChainSnake []ztunnelCert `json:"cert_chain"`
	RootCerts      []ztunnelCert `json:"rootCerts"`
	RootCertsSnake []ztunnelCert `json:"root_certs"`
}

// ztunnelCert carries the certificate in pem: ztunnel writes the PEM text
// base64-encoded; a hand-edited dump may hold the PEM itself.
type ztunnelCert struct {
	PEM string `json:"pem"`
}

// ztunnelBundles reads the certificates[] of a ztunnel config_dump, one
// bundle per identity, in the dump's order.
func ztunnelBundles(raw json.RawMessage) ([]*Bundle, error) {
	var list []ztunnelCerts
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("malformed ztunnel config_dump: certificates: %w", err)
	}
	if len(list) == 0 {
		return nil, errors.New("the ztunnel config_dump has no certificates: ztunnel has no workload on its node yet, or the dump was cut")
	}
	var out []*Bundle
	for i, c := range list {
		if c.Identity == "" {
			return nil, fmt.Errorf("malformed ztunnel config_dump: certificates[%d] has no identity", i)
		}
		b := &Bundle{Source: SourceFile, Identity: c.Identity, State: c.State}
		if c.State != ZtunnelAvailable {
			out = append(out, b)
			continue
		}
		var err error
		if b.Chain, err = ztunnelPEMs(append(c.CertChain, c.CertChainSnake...)); err != nil {
			return nil, fmt.Errorf("ztunnel identity %s: certChain: %w", c.Identity, err)
		}
		if roots := append(c.RootCerts, c.RootCertsSnake...); len(roots) > 0 {
			if b.Roots, err = ztunnelPEMs(roots); err != nil {
				return nil, fmt.Errorf("ztunnel identity %s: rootCerts: %w", c.Identity, err)
			}
		}
		if b, err = splitRoots(b); err != nil {
			return nil, fmt.Errorf("ztunnel identity %s: %w", c.Identity, err)
		}
		out = append(out, b)
	}
	return out, nil
}

func ztunnelPEMs(certs []ztunnelCert) ([]*x509.Certificate, error) {
	var all []byte
	for i, c := range certs {
		data := []byte(c.PEM)
		if !bytes.Contains(data, []byte("-----BEGIN")) {
			dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(c.PEM))
			if err != nil {
				return nil, fmt.Errorf("entry %d: pem is neither PEM nor base64-encoded PEM: %w", i, err)
			}
			data = dec
		}
		all = append(append(all, data...), '\n')
	}
	if len(all) == 0 {
		return nil, errors.New("empty")
	}
	return ParsePEM(all)
}

// ztunnelPending is the verdict line of an identity without certificates.
func ztunnelPending(b *Bundle) (msg string, pending bool) {
	switch {
	case b.State == ZtunnelInitializing:
		return fmt.Sprintf("ztunnel is still fetching the certificate of %s from the CA (state Initializing); if it stays so, check the ztunnel logs and istiod", b.Identity), true
	case strings.HasPrefix(b.State, ZtunnelUnavailable):
		return fmt.Sprintf("ztunnel has no certificate for %s (state %q); check the ztunnel logs and istiod", b.Identity, b.State), false
	}
	return fmt.Sprintf("ztunnel has no certificate for %s (state %q)", b.Identity, b.State), false
}

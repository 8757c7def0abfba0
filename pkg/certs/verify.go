package certs

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/duration"
)

// Describe returns the facts about c at time now.
func Describe(c *x509.Certificate, role string, now time.Time) Certificate {
	out := Certificate{
		Role:               role,
		Subject:            c.Subject.String(),
		Issuer:             c.Issuer.String(),
		DNSNames:           c.DNSNames,
		Serial:             Serial(c.SerialNumber),
		KeyType:            keyType(c),
		SignatureAlgorithm: c.SignatureAlgorithm.String(),
		IsCA:               c.IsCA,
		NotBefore:          c.NotBefore.UTC(),
		NotAfter:           c.NotAfter.UTC(),
		TimeLeft:           c.NotAfter.Sub(now).Truncate(time.Second),
		SHA256:             Fingerprint(c),
		cert:               c,
	}
	out.TimeLeftSeconds = int64(out.TimeLeft / time.Second)
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" {
			out.SPIFFEID = u.String()
			out.Identity = ParseSPIFFEID(u)
			break
		}
	}
	switch {
	case now.Before(c.NotBefore):
		out.Status = StatusNotYetValid
	case now.After(c.NotAfter):
		out.Status = StatusExpired
	case expiring(c, now):
		out.Status = StatusExpiring
	default:
		out.Status = StatusValid
	}
	return out
}

// expiring is under ExpiryWarning left and past the point where the Istio
// agent rotates (half the lifetime): Istio's default 24h certificates always
// have less than 24h left, and warning about every healthy one would drown
// the real case, a certificate that should have been replaced.
func expiring(c *x509.Certificate, now time.Time) bool {
	left := c.NotAfter.Sub(now)
	return left < ExpiryWarning && left < c.NotAfter.Sub(c.NotBefore)/2
}

// Fingerprint is the SHA-256 of the DER certificate, written as openssl does
// (upper-case hex pairs joined by colons).
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// Serial is the serial number in openssl's notation: upper-case hex with an
// even number of digits.
func Serial(n *big.Int) string {
	if n == nil {
		return ""
	}
	sign := ""
	if n.Sign() < 0 {
		sign = "-"
	}
	s := strings.ToUpper(new(big.Int).Abs(n).Text(16))
	if len(s)%2 == 1 {
		s = "0" + s
	}
	return sign + s
}

func keyType(c *x509.Certificate) string {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return c.PublicKeyAlgorithm.String()
}

// ParseSPIFFEID splits an Istio SPIFFE ID. IDs that do not follow Istio's
// /ns/NS/sa/SA path keep only the trust domain.
func ParseSPIFFEID(u *url.URL) *SPIFFEID {
	id := &SPIFFEID{TrustDomain: u.Host}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) == 4 && parts[0] == "ns" && parts[2] == "sa" {
		id.Namespace, id.ServiceAccount = parts[1], parts[3]
	}
	return id
}

// Expect is what the certificates should say about the workload.
type Expect struct {
	// Namespace and ServiceAccount of the pod; empty when there is no pod
	// (a file): the identity check is then skipped.
	Namespace      string
	ServiceAccount string
}

// Check names in a Verdict.
const (
	CheckState    = "state"
	CheckChain    = "chain"
	CheckValidity = "validity"
	CheckIdentity = "identity"
)

// Evaluate describes every certificate of b and judges it at time now.
func Evaluate(b *Bundle, expect Expect, now time.Time) ([]Certificate, Verdict) {
	if len(b.Chain) == 0 {
		return nil, pendingVerdict(b)
	}
	var certs []Certificate
	for i, c := range b.Chain {
		role := RoleIntermediate
		if i == 0 {
			role = RoleLeaf
		}
		certs = append(certs, Describe(c, role, now))
	}
	for _, c := range b.Roots {
		d := Describe(c, RoleRoot, now)
		d.TrustDomain, d.TrustDomainFrom = b.rootTrustDomain(c)
		certs = append(certs, d)
	}
	v := Verdict{OK: true}
	add := func(name string, err error, okMsg string) {
		c := Check{Name: name, OK: err == nil, Message: okMsg}
		if err != nil {
			c.Message = err.Error()
			v.OK = false
		}
		v.Checks = append(v.Checks, c)
	}
	root, err := verifyChain(b)
	add(CheckChain, err, chainOK(b, root))
	add(CheckValidity, validity(certs, now), validityOK(certs[0], now))
	if expect.Namespace != "" {
		add(CheckIdentity, identity(certs[0], expect), "identity "+certs[0].SPIFFEID+" matches the pod's namespace and service account")
	} else {
		v.Checks = append(v.Checks, Check{Name: CheckIdentity, Skipped: true, Message: noPod(certs[0])})
	}
	for _, c := range certs {
		if c.Status == StatusExpiring {
			v.Warnings = append(v.Warnings, fmt.Sprintf("%s certificate %s expires in %s (not after %s)", c.Role, describeName(c), duration.HumanDuration(c.TimeLeft), c.NotAfter.Format(time.RFC3339)))
		}
	}
	return certs, v
}

func chainOK(b *Bundle, root *x509.Certificate) string {
	if root == nil {
		if len(b.Roots) == 0 {
			return "" // the check failed; its error is the message
		}
		root = b.Roots[0]
	}
	msg := fmt.Sprintf("chain verifies to root %q (SHA-256 %s)", root.Subject.String(), short(Fingerprint(root)))
	if td, from := b.rootTrustDomain(root); len(b.Roots) > 1 && from != TrustDomainFromSubject && td != "" {
		msg += ", trust domain " + td
	}
	return msg
}

// noPod is the skipped identity check of a file read without a pod.
func noPod(leaf Certificate) string {
	switch {
	case leaf.Identity == nil:
		return "no pod to compare; the leaf has no SPIFFE ID (no spiffe:// URI SAN)"
	case leaf.Identity.Namespace != "":
		return fmt.Sprintf("no pod to compare; the leaf is %s (namespace %s, service account %s)", leaf.SPIFFEID, leaf.Identity.Namespace, leaf.Identity.ServiceAccount)
	}
	return "no pod to compare; the leaf is " + leaf.SPIFFEID
}

// rootTrustDomain is the trust domain a root stands for: as the dump files
// it (SPIFFE validator), else its spiffe:// URI SAN, else the O= of its
// subject, which istiod's self-signed CA sets to the trust domain.
func (b *Bundle) rootTrustDomain(root *x509.Certificate) (name, from string) {
	if td, ok := b.trustDomains[Fingerprint(root)]; ok {
		return td.name, td.from
	}
	for _, u := range root.URIs {
		if u.Scheme == "spiffe" && u.Host != "" {
			return u.Host, TrustDomainFromURI
		}
	}
	if o := root.Subject.Organization; len(o) == 1 {
		return o[0], TrustDomainFromSubject
	}
	return "", ""
}

func validityOK(leaf Certificate, now time.Time) string {
	return fmt.Sprintf("leaf valid now, for %s more (not after %s)", duration.HumanDuration(leaf.TimeLeft), leaf.NotAfter.Format(time.RFC3339))
}

// verifyChain checks signatures only: it verifies at an instant when every
// certificate is within its validity period, so an expired leaf is reported
// as expired (by validity) rather than as a broken chain.
func verifyChain(b *Bundle) (*x509.Certificate, error) {
	if len(b.Roots) == 0 {
		return nil, errors.New("no trust root to verify the chain against; give the root certificate too (e.g. --file root-cert.pem)")
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range b.Roots {
		roots.AddCert(r)
	}
	for _, c := range b.Chain[1:] {
		inter.AddCert(c)
	}
	at := b.Chain[0].NotBefore
	for _, c := range append(append([]*x509.Certificate{}, b.Chain...), b.Roots...) {
		if c.NotBefore.After(at) {
			at = c.NotBefore
		}
	}
	chains, err := b.Chain[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   at.Add(time.Second),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) && invalid.Reason == x509.Expired {
		// No instant when all are valid (a leaf that expired before a
		// re-created root began): check the signatures alone.
		var root *x509.Certificate
		if root, err = signaturesOnly(b); err == nil {
			return root, nil
		}
	}
	if err == nil {
		c := chains[0]
		return c[len(c)-1], nil
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return nil, fmt.Errorf("chain does not verify to the trust root %q (SHA-256 %s): leaf issued by %q is signed by a different CA; the workload got its certificate from another CA than the one its peers trust (check the istio-ca-root-cert ConfigMap and istiod's cacerts)",
			b.Roots[0].Subject.String(), short(Fingerprint(b.Roots[0])), b.Chain[0].Issuer.String())
	}
	return nil, fmt.Errorf("chain does not verify to the trust root %q: %w", b.Roots[0].Subject.String(), err)
}

// signaturesOnly walks from the leaf through the chain to a root checking
// each signature, ignoring validity periods.
func signaturesOnly(b *Bundle) (*x509.Certificate, error) {
	cur := b.Chain[0]
	for range len(b.Chain) + 1 {
		for _, r := range b.Roots {
			if cur.CheckSignatureFrom(r) == nil {
				return r, nil
			}
		}
		next := (*x509.Certificate)(nil)
		for _, c := range b.Chain[1:] {
			if c != cur && cur.CheckSignatureFrom(c) == nil {
				next = c
				break
			}
		}
		if next == nil {
			break
		}
		cur = next
	}
	return nil, x509.UnknownAuthorityError{Cert: cur}
}

// validity fails on the first certificate (leaf first) outside its period.
func validity(certs []Certificate, now time.Time) error {
	for _, c := range certs {
		switch c.Status {
		case StatusExpired:
			return fmt.Errorf("%s certificate %s expired %s ago (not after %s); the proxy is not rotating it: check the istio-proxy logs and istiod",
				c.Role, describeName(c), duration.HumanDuration(now.Sub(c.NotAfter)), c.NotAfter.Format(time.RFC3339))
		case StatusNotYetValid:
			return fmt.Errorf("%s certificate %s is not valid until %s (in %s); check the clocks of the node and istiod",
				c.Role, describeName(c), c.NotBefore.Format(time.RFC3339), duration.HumanDuration(c.NotBefore.Sub(now)))
		}
	}
	return nil
}

func identity(leaf Certificate, e Expect) error {
	if leaf.SPIFFEID == "" {
		return errors.New("leaf certificate has no SPIFFE ID (no spiffe:// URI SAN); it is not an Istio workload certificate")
	}
	id := leaf.Identity
	if id.Namespace == e.Namespace && id.ServiceAccount == e.ServiceAccount {
		return nil
	}
	return fmt.Errorf("identity %s does not match the pod: expected namespace %q and service account %q (spiffe://%s/ns/%s/sa/%s); the proxy is serving another workload's certificate",
		leaf.SPIFFEID, e.Namespace, e.ServiceAccount, id.TrustDomain, e.Namespace, e.ServiceAccount)
}

// describeName is the best short name of a certificate for messages: its
// SPIFFE ID, else its subject, else its serial.
func describeName(c Certificate) string {
	switch {
	case c.SPIFFEID != "":
		return c.SPIFFEID
	case c.Subject != "":
		return fmt.Sprintf("%q", c.Subject)
	}
	return "serial " + c.Serial
}

// short keeps the first 8 bytes of a fingerprint: enough to tell roots apart
// in a message.
func short(fp string) string {
	if len(fp) > 23 {
		return fp[:23] + "…"
	}
	return fp
}

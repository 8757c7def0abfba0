// Package certs reads a workload's mTLS certificates (from the Envoy admin
// config_dump, the legacy /etc/certs files or PEM files), describes every
// certificate and gives a verdict: the chain verifies to the trust root, the
// leaf is valid now and its SPIFFE ID is the pod's identity.
package certs

import (
	"crypto/x509"
	"time"
)

// Source names where a Bundle came from; also the values of --source.
type Source string

const (
	SourceAuto   Source = "auto"
	SourceEnvoy  Source = "envoy"
	SourceLegacy Source = "legacy"
	SourceFile   Source = "file"
	// SourceZtunnel is the ztunnel on an ambient pod's node.
	SourceZtunnel Source = "ztunnel"
)

// Sources are the values --source accepts, in the order auto tries them
// (file only when asked for; ztunnel for pods in ambient mode).
var Sources = []Source{SourceAuto, SourceEnvoy, SourceLegacy, SourceZtunnel, SourceFile}

// Bundle is what a source yields: the workload chain (leaf first) and the
// trust roots it should verify against.
type Bundle struct {
	Source Source
	// Origin says where exactly, e.g. "config_dump via port-forward to 15000".
	Origin string
	Chain  []*x509.Certificate
	Roots  []*x509.Certificate
	// Identity is the identity a dump files the certificates under
	// (ztunnel's certificates[].identity); empty for a sidecar's.
	Identity string
	// State is the state the dump gives them: ACTIVE or WARMING for Envoy's
	// secret "default", ztunnel's Available, Initializing or Unavailable.
	// A bundle that is not ready has no Chain.
	State string
	// Secrets are all secrets of an Envoy dump, with their states.
	Secrets []SecretStatus

	// trustDomains names the trust domain of roots the dump files under
	// one (SPIRE federation), by fingerprint.
	trustDomains map[string]trustDomain
}

type trustDomain struct{ name, from string }

func (b *Bundle) setTrustDomain(root *x509.Certificate, name, from string) {
	if b.trustDomains == nil {
		b.trustDomains = map[string]trustDomain{}
	}
	b.trustDomains[Fingerprint(root)] = trustDomain{name, from}
}

// Where a root's trust domain was read from.
const (
	TrustDomainFromValidator = "spiffe-validator" // Envoy's SPIFFE validator config
	TrustDomainFromURI       = "uri-san"          // the root's spiffe:// URI SAN
	TrustDomainFromSubject   = "subject"          // the root's O= (istiod's CA convention)
)

// Role of a certificate in the bundle.
const (
	RoleLeaf         = "leaf"
	RoleIntermediate = "intermediate"
	RoleRoot         = "root"
)

// Status of one certificate's validity period.
const (
	StatusValid       = "valid"
	StatusExpiring    = "expiring"
	StatusExpired     = "expired"
	StatusNotYetValid = "not-yet-valid"
)

// ExpiryWarning is how close to expiry a certificate gets a warning, once it
// is also past the half of its lifetime where the Istio agent replaces it: a
// leaf in that state means rotation is stuck.
const ExpiryWarning = 24 * time.Hour

// Certificate is everything shown about one certificate.
type Certificate struct {
	Role               string        `json:"role"`
	Subject            string        `json:"subject"`
	Issuer             string        `json:"issuer"`
	SPIFFEID           string        `json:"spiffeID,omitempty"`
	Identity           *SPIFFEID     `json:"identity,omitempty"`
	DNSNames           []string      `json:"dnsNames,omitempty"`
	Serial             string        `json:"serial"`
	KeyType            string        `json:"keyType"`
	SignatureAlgorithm string        `json:"signatureAlgorithm"`
	IsCA               bool          `json:"isCA"`
	NotBefore          time.Time     `json:"notBefore"`
	NotAfter           time.Time     `json:"notAfter"`
	TimeLeft           time.Duration `json:"-"`
	// TimeLeftSeconds is TimeLeft for JSON/YAML; negative once expired.
	TimeLeftSeconds int64  `json:"timeLeftSeconds"`
	Status          string `json:"status"`
	SHA256          string `json:"sha256Fingerprint"`
	// TrustDomain of a root, and where it was read from (TrustDomainFrom*).
	TrustDomain     string `json:"trustDomain,omitempty"`
	TrustDomainFrom string `json:"trustDomainFrom,omitempty"`

	cert *x509.Certificate
}

// X509 is the parsed certificate behind c.
func (c *Certificate) X509() *x509.Certificate { return c.cert }

// SPIFFEID is a parsed Istio workload identity:
// spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT.
type SPIFFEID struct {
	TrustDomain    string `json:"trustDomain"`
	Namespace      string `json:"namespace,omitempty"`
	ServiceAccount string `json:"serviceAccount,omitempty"`
}

// Check is one line of a verdict. A skipped check (nothing to compare
// against) is neither a pass nor a failure.
type Check struct {
	Name    string `json:"name"`
	OK      bool   `json:"ok"`
	Skipped bool   `json:"skipped,omitempty"`
	Message string `json:"message"`
}

// Verdict sums up the checks; OK only when no check failed. Skipped checks
// and warnings do not fail it. Pending means there is no certificate yet
// (a warming secret, an initializing ztunnel identity): not OK, not broken.
type Verdict struct {
	OK       bool     `json:"ok"`
	Pending  bool     `json:"pending,omitempty"`
	Checks   []Check  `json:"checks"`
	Warnings []string `json:"warnings,omitempty"`
}

// Failures are the messages of the failed checks.
func (v Verdict) Failures() []string {
	var out []string
	for _, c := range v.Checks {
		if !c.OK && !c.Skipped {
			out = append(out, c.Message)
		}
	}
	return out
}

// Workload names the pod a report is about; empty for --file without a pod.
type Workload struct {
	Namespace      string `json:"namespace"`
	Pod            string `json:"pod"`
	ServiceAccount string `json:"serviceAccount"`
}

// Report is the result for one workload.
type Report struct {
	Workload *Workload `json:"workload,omitempty"`
	Source   Source    `json:"source"`
	Origin   string    `json:"origin"`
	// Identity, State and Secrets are what a dump says (see Bundle).
	Identity     string         `json:"identity,omitempty"`
	State        string         `json:"state,omitempty"`
	Secrets      []SecretStatus `json:"secrets,omitempty"`
	MTLS         *MTLS          `json:"mtls,omitempty"`
	Certificates []Certificate  `json:"certificates"`
	Verdict      Verdict        `json:"verdict"`

	bundle *Bundle
}

// Bundle is the raw certificates the report was built from.
func (r *Report) Bundle() *Bundle { return r.bundle }

// Name is how the report's workload is called in messages.
func (r *Report) Name() string {
	if r.Workload == nil && r.Identity != "" {
		return r.Identity + " in " + r.Origin
	}
	if r.Workload == nil {
		return r.Origin
	}
	return r.Workload.Namespace + "/" + r.Workload.Pod
}

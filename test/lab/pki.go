package lab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// keyPair is a certificate with its key, as PEM files on disk.
type keyPair struct {
	Cert     *x509.Certificate
	Key      *ecdsa.PrivateKey
	CertFile string
	KeyFile  string
}

type certSpec struct {
	name     string
	cn       string
	orgs     []string
	dnsNames []string
	ips      []net.IP
	server   bool
	client   bool
}

// generatePKI writes the lab's certificates: one CA signs the API server's
// and istiod's serving certs and every client cert; a separate RSA key signs
// service-account tokens.
func generatePKI(dir string) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &PKI{Dir: dir}
	ca, err := newCA(dir)
	if err != nil {
		return nil, err
	}
	p.CA = ca
	loopback := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	specs := []certSpec{
		{name: "apiserver", cn: "kube-apiserver", server: true, ips: append(loopback, net.ParseIP("10.0.0.1")),
			dnsNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}},
		{name: "admin", cn: "lab-admin", orgs: []string{"system:masters"}, client: true},
		{name: "controller-manager", cn: "system:kube-controller-manager", client: true},
		{name: "scheduler", cn: "system:kube-scheduler", client: true},
		{name: "kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, client: true},
		{name: "kwok", cn: "kwok-controller", orgs: []string{"system:masters"}, client: true},
		{name: "kwok-server", cn: "kwok-kubelet", server: true, ips: loopback, dnsNames: []string{"localhost"}},
		{name: "istiod", cn: "istiod", orgs: []string{"system:masters"}, server: true, client: true, ips: loopback,
			dnsNames: []string{"localhost", "istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local"}},
	}
	p.certs = map[string]*keyPair{}
	for _, s := range specs {
		kp, err := ca.sign(dir, s)
		if err != nil {
			return nil, fmt.Errorf("issuing %s certificate: %w", s.name, err)
		}
		p.certs[s.name] = kp
	}
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	p.ServiceAccountKey = filepath.Join(dir, "sa.key")
	p.ServiceAccountPub = filepath.Join(dir, "sa.pub")
	if err := writePEM(p.ServiceAccountKey, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(sa)); err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return nil, err
	}
	if err := writePEM(p.ServiceAccountPub, "PUBLIC KEY", pub); err != nil {
		return nil, err
	}
	return p, nil
}

// PKI is the lab's certificate set.
type PKI struct {
	Dir               string
	CA                *keyPair
	ServiceAccountKey string
	ServiceAccountPub string
	certs             map[string]*keyPair
}

// Cert returns the named certificate ("admin", "apiserver", "istiod", …).
func (p *PKI) Cert(name string) *keyPair { return p.certs[name] }

// IssueClient signs a client certificate for user in groups; tests use it to
// act as users with restricted RBAC.
func (p *PKI) IssueClient(dir, user string, groups []string) (certFile, keyFile string, err error) {
	kp, err := p.CA.sign(dir, certSpec{name: "user-" + user, cn: user, orgs: groups, client: true})
	if err != nil {
		return "", "", err
	}
	return kp.CertFile, kp.KeyFile, nil
}

func newCA(dir string) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "kubectl-mesh-lab-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return save(dir, "ca", der, key)
}

func (ca *keyPair) sign(dir string, s certSpec) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: s.cn, Organization: s.orgs},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		DNSNames:     s.dnsNames,
		IPAddresses:  s.ips,
	}
	if s.server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if s.client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	return save(dir, s.name, der, key)
}

func save(dir, name string, der []byte, key *ecdsa.PrivateKey) (*keyPair, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	kp := &keyPair{Cert: cert, Key: key, CertFile: filepath.Join(dir, name+".crt"), KeyFile: filepath.Join(dir, name+".key")}
	if err := writePEM(kp.CertFile, "CERTIFICATE", der); err != nil {
		return nil, err
	}
	if err := writePEM(kp.KeyFile, "EC PRIVATE KEY", kb); err != nil {
		return nil, err
	}
	return kp, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n
}

// loadPKI reads back a PKI written by generatePKI (for a lab that is reused).
func loadPKI(dir string) (*PKI, error) {
	p := &PKI{Dir: dir, certs: map[string]*keyPair{},
		ServiceAccountKey: filepath.Join(dir, "sa.key"), ServiceAccountPub: filepath.Join(dir, "sa.pub")}
	for _, name := range []string{"ca", "apiserver", "admin", "controller-manager", "scheduler", "kubelet-client", "kwok", "kwok-server", "istiod"} {
		kp, err := loadKeyPair(dir, name)
		if err != nil {
			return nil, err
		}
		if name == "ca" {
			p.CA = kp
		} else {
			p.certs[name] = kp
		}
	}
	return p, nil
}

func loadKeyPair(dir, name string) (*keyPair, error) {
	kp := &keyPair{CertFile: filepath.Join(dir, name+".crt"), KeyFile: filepath.Join(dir, name+".key")}
	cb, err := os.ReadFile(kp.CertFile)
	if err != nil {
		return nil, err
	}
	kb, err := os.ReadFile(kp.KeyFile)
	if err != nil {
		return nil, err
	}
	cblock, _ := pem.Decode(cb)
	kblock, _ := pem.Decode(kb)
	if cblock == nil || kblock == nil {
		return nil, fmt.Errorf("%s: not PEM", name)
	}
	if kp.Cert, err = x509.ParseCertificate(cblock.Bytes); err != nil {
		return nil, err
	}
	if kp.Key, err = x509.ParseECPrivateKey(kblock.Bytes); err != nil {
		return nil, err
	}
	return kp, nil
}

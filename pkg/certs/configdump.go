package certs

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	// The secrets in a SecretsConfigDump are Any-wrapped tls/v3 Secrets;
	// importing the package registers the type (and the SPIFFE validator's
	// config) so protojson can resolve them.
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
)

// Names of the SDS secrets the Istio agent gives Envoy.
const (
	SecretWorkload = "default"
	SecretRoot     = "ROOTCA"
)

// States of an Envoy secret in a config_dump.
const (
	StateActive  = "ACTIVE"
	StateWarming = "WARMING"
	StateStatic  = "STATIC"
)

// ConfigDumpPath asks Envoy's admin API only for the secrets.
const ConfigDumpPath = "/config_dump?mask=dynamic_active_secrets,dynamic_warming_secrets"

// ErrEmptyConfigDump means Envoy answered but has no workload secret.
var ErrEmptyConfigDump = errors.New("config_dump has no secrets")

// Type URLs of the entries of ConfigDump.configs that hold secrets: the
// SecretsConfigDump of a whole dump, or single secrets with ?resource=.
const (
	typeSecretsDump   = "type.googleapis.com/envoy.admin.v3.SecretsConfigDump"
	typeDynamicSecret = typeSecretsDump + ".DynamicSecret"
	typeStaticSecret  = typeSecretsDump + ".StaticSecret"
)

// SecretStatus is one secret of an Envoy config_dump.
type SecretStatus struct {
	Name  string `json:"name"`
	State string `json:"state"`
}

// envoySecret is a secret with its payload; sec is nil when Envoy has none
// yet (a warming secret is only a name).
type envoySecret struct {
	SecretStatus
	sec *tlsv3.Secret
}

var unmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}

// ParseConfigDump reads an Envoy admin /config_dump response of a live proxy
// and returns the workload chain (secret "default") and trust root (secret
// "ROOTCA"). A workload secret that is still warming is ErrEmptyConfigDump.
func ParseConfigDump(data []byte) (*Bundle, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%w: the response is empty", ErrEmptyConfigDump)
	}
	secrets, err := envoySecrets(data)
	if err != nil {
		return nil, err
	}
	b, err := envoyBundle(secrets)
	if err != nil {
		return nil, err
	}
	if b.State == StateWarming {
		return nil, fmt.Errorf("%w: %s", ErrEmptyConfigDump, warmingMessage)
	}
	// A live pod's report keeps its usual header: the state and the list of
	// secrets are for saved dumps, where nothing else tells them.
	b.Source, b.State, b.Secrets = SourceEnvoy, "", nil
	return b, nil
}

const warmingMessage = `secret "default" is still warming: the istio agent has not got a certificate from istiod yet; check the istio-proxy logs`

// envoySecrets reads the secrets of a config_dump: a whole dump
// ({"configs": [...]}, any casing), one cut with ?resource= or ?mask=, or a
// bare SecretsConfigDump as istioctl proxy-config secret -o json prints it.
// Entries of other types (bootstrap, clusters, listeners, ...) are skipped
// unread, so extension types this program does not know cannot break it.
func envoySecrets(data []byte) ([]envoySecret, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("malformed config_dump: %w", err)
	}
	if _, ok := top["configs"]; !ok {
		var s adminv3.SecretsConfigDump
		if err := unmarshal.Unmarshal(data, &s); err != nil {
			return nil, fmt.Errorf("malformed config_dump: %w", err)
		}
		out := fromSecretsDump(&s)
		if len(out) == 0 {
			return nil, fmt.Errorf("%w: the proxy has not received any certificate over SDS yet", ErrEmptyConfigDump)
		}
		return out, nil
	}
	var dump struct {
		Configs []json.RawMessage `json:"configs"`
	}
	if err := json.Unmarshal(data, &dump); err != nil {
		return nil, fmt.Errorf("malformed config_dump: %w", err)
	}
	var out []envoySecret
	var others []string
	for i, raw := range dump.Configs {
		var head struct {
			Type string `json:"@type"`
		}
		if err := json.Unmarshal(raw, &head); err != nil {
			return nil, fmt.Errorf("malformed config_dump: configs[%d]: %w", i, err)
		}
		switch head.Type {
		case typeSecretsDump, typeDynamicSecret, typeStaticSecret:
		default:
			others = append(others, strings.TrimPrefix(head.Type, "type.googleapis.com/envoy.admin.v3."))
			continue
		}
		var a anypb.Any
		if err := unmarshal.Unmarshal(raw, &a); err != nil {
			return nil, fmt.Errorf("malformed config_dump: configs[%d]: %w", i, err)
		}
		m, err := a.UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("malformed config_dump: configs[%d]: %w", i, err)
		}
		switch m := m.(type) {
		case *adminv3.SecretsConfigDump:
			out = append(out, fromSecretsDump(m)...)
		case *adminv3.SecretsConfigDump_DynamicSecret:
			// ?resource= does not say which list a secret came from; a
			// warming one has no payload yet.
			s := dynamicSecret(m, StateActive)
			if s.sec == nil {
				s.State = StateWarming
			}
			out = append(out, s)
		case *adminv3.SecretsConfigDump_StaticSecret:
			out = append(out, staticSecret(m))
		}
	}
	if len(out) == 0 {
		if len(others) > 0 {
			return nil, fmt.Errorf("%w: the dump has %s but no SecretsConfigDump; dump all of it (curl localhost:15000/config_dump) or only the secrets (?resource=dynamic_active_secrets)", ErrEmptyConfigDump, strings.Join(others, ", "))
		}
		return nil, fmt.Errorf("%w: the proxy has not received any certificate over SDS yet", ErrEmptyConfigDump)
	}
	return out, nil
}

func fromSecretsDump(d *adminv3.SecretsConfigDump) []envoySecret {
	var out []envoySecret
	for _, s := range d.GetStaticSecrets() {
		out = append(out, staticSecret(s))
	}
	for _, s := range d.GetDynamicActiveSecrets() {
		out = append(out, dynamicSecret(s, StateActive))
	}
	for _, s := range d.GetDynamicWarmingSecrets() {
		out = append(out, dynamicSecret(s, StateWarming))
	}
	return out
}

func dynamicSecret(ds *adminv3.SecretsConfigDump_DynamicSecret, state string) envoySecret {
	return envoySecret{SecretStatus: SecretStatus{Name: ds.GetName(), State: state}, sec: payload(ds.GetSecret())}
}

func staticSecret(ss *adminv3.SecretsConfigDump_StaticSecret) envoySecret {
	return envoySecret{SecretStatus: SecretStatus{Name: ss.GetName(), State: StateStatic}, sec: payload(ss.GetSecret())}
}

// payload is the secret inside a, or nil when a holds only a name (a
// warming secret) or something else than a tls/v3 Secret.
func payload(a *anypb.Any) *tlsv3.Secret {
	if a == nil {
		return nil
	}
	var sec tlsv3.Secret
	if a.UnmarshalTo(&sec) != nil || sec.GetType() == nil {
		return nil
	}
	return &sec
}

// envoyBundle builds the workload's bundle from the secrets "default" and
// "ROOTCA". A "default" that is only warming gives a bundle in state
// WARMING without certificates.
func envoyBundle(secrets []envoySecret) (*Bundle, error) {
	b := &Bundle{Source: SourceFile, State: StateActive}
	var names []string
	warming := false
	for _, s := range secrets {
		b.Secrets = append(b.Secrets, s.SecretStatus)
		names = append(names, s.Name)
		switch {
		case s.State == StateWarming || s.sec == nil:
			warming = warming || s.Name == SecretWorkload
		case s.Name == SecretWorkload && b.Chain == nil:
			data, err := dataSource(s.sec.GetTlsCertificate().GetCertificateChain())
			if err != nil {
				return nil, fmt.Errorf("secret %q has no certificate chain: %w", SecretWorkload, err)
			}
			if b.Chain, err = ParsePEM(data); err != nil {
				return nil, fmt.Errorf("secret %q: %w", SecretWorkload, err)
			}
		case s.Name == SecretRoot && b.Roots == nil:
			if err := addRoots(b, s.sec.GetValidationContext()); err != nil {
				return nil, fmt.Errorf("secret %q: %w", SecretRoot, err)
			}
		}
	}
	if b.Chain == nil {
		if warming {
			b.State = StateWarming
			return b, nil
		}
		sort.Strings(names)
		return nil, fmt.Errorf("%w: no secret %q among the secrets [%s]", ErrEmptyConfigDump, SecretWorkload, strings.Join(names, " "))
	}
	if b.Roots == nil {
		return nil, fmt.Errorf("%w: no secret %q (trust root) among the active secrets", ErrEmptyConfigDump, SecretRoot)
	}
	return splitRoots(b)
}

// addRoots reads the trust roots of a validation context: trusted_ca (one
// or several PEM certificates) and, with SPIRE federation, the SPIFFE
// validator's bundle per trust domain.
func addRoots(b *Bundle, vc *tlsv3.CertificateValidationContext) error {
	if vc == nil {
		return errors.New("has no validation context")
	}
	var errs []string
	if ca := vc.GetTrustedCa(); ca != nil && ca.GetSpecifier() != nil {
		data, err := dataSource(ca)
		if err == nil {
			var roots []*x509.Certificate
			if roots, err = ParsePEM(data); err == nil {
				b.Roots = append(b.Roots, roots...)
			}
		}
		if err != nil {
			errs = append(errs, "trusted CA: "+err.Error())
		}
	}
	if cv := vc.GetCustomValidatorConfig(); cv != nil && cv.GetTypedConfig() != nil {
		var spiffe tlsv3.SPIFFECertValidatorConfig
		if err := cv.GetTypedConfig().UnmarshalTo(&spiffe); err == nil {
			for _, td := range spiffe.GetTrustDomains() {
				data, err := dataSource(td.GetTrustBundle())
				if err == nil {
					var roots []*x509.Certificate
					if roots, err = ParsePEM(data); err == nil {
						for _, r := range roots {
							b.setTrustDomain(r, td.GetName(), TrustDomainFromValidator)
						}
						b.Roots = append(b.Roots, roots...)
					}
				}
				if err != nil {
					errs = append(errs, fmt.Sprintf("trust domain %s: %v", td.GetName(), err))
				}
			}
		}
	}
	if len(b.Roots) == 0 {
		if len(errs) == 0 {
			return errors.New("has no trusted CA")
		}
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

func dataSource(ds *corev3.DataSource) ([]byte, error) {
	switch {
	case ds == nil:
		return nil, errors.New("not set")
	case len(ds.GetInlineBytes()) > 0:
		return ds.GetInlineBytes(), nil
	case ds.GetInlineString() != "":
		return []byte(ds.GetInlineString()), nil
	case ds.GetFilename() != "":
		return nil, fmt.Errorf("it points at file %s inside the proxy; use --source legacy or copy the file and use --file", ds.GetFilename())
	}
	return nil, errors.New("empty")
}

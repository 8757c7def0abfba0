package certs

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	// The secrets in a SecretsConfigDump are Any-wrapped tls/v3 Secrets;
	// importing the package registers the type so protojson can resolve it.
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// Names of the SDS secrets the Istio agent gives Envoy.
const (
	SecretWorkload = "default"
	SecretRoot     = "ROOTCA"
)

// ConfigDumpPath asks Envoy's admin API only for the secrets.
const ConfigDumpPath = "/config_dump?mask=dynamic_active_secrets,dynamic_warming_secrets"

// ErrEmptyConfigDump means Envoy answered but has no workload secret.
var ErrEmptyConfigDump = errors.New("config_dump has no secrets")

// ParseConfigDump reads an Envoy admin /config_dump response and returns the
// workload chain (secret "default") and trust root (secret "ROOTCA").
func ParseConfigDump(data []byte) (*Bundle, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%w: the response is empty", ErrEmptyConfigDump)
	}
	var dump adminv3.ConfigDump
	// Newer Envoys add fields; they must not break reading the secrets.
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, &dump); err != nil {
		return nil, fmt.Errorf("malformed config_dump: %w", err)
	}
	var active, warming []*adminv3.SecretsConfigDump_DynamicSecret
	for _, a := range dump.GetConfigs() {
		var s adminv3.SecretsConfigDump
		if a.MessageIs(&s) {
			if err := a.UnmarshalTo(&s); err != nil {
				return nil, fmt.Errorf("malformed config_dump: %w", err)
			}
			active = append(active, s.GetDynamicActiveSecrets()...)
			warming = append(warming, s.GetDynamicWarmingSecrets()...)
		}
	}
	if len(active) == 0 && len(warming) == 0 {
		return nil, fmt.Errorf("%w: the proxy has not received any certificate over SDS yet", ErrEmptyConfigDump)
	}
	b := &Bundle{Source: SourceEnvoy}
	var names []string
	for _, ds := range active {
		names = append(names, ds.GetName())
		var sec tlsv3.Secret
		if ds.GetSecret() == nil {
			continue
		}
		if err := ds.GetSecret().UnmarshalTo(&sec); err != nil {
			return nil, fmt.Errorf("malformed config_dump: secret %q: %w", ds.GetName(), err)
		}
		switch ds.GetName() {
		case SecretWorkload:
			data, err := dataSource(sec.GetTlsCertificate().GetCertificateChain())
			if err != nil {
				return nil, fmt.Errorf("secret %q has no certificate chain: %w", SecretWorkload, err)
			}
			if b.Chain, err = ParsePEM(data); err != nil {
				return nil, fmt.Errorf("secret %q: %w", SecretWorkload, err)
			}
		case SecretRoot:
			data, err := dataSource(sec.GetValidationContext().GetTrustedCa())
			if err != nil {
				return nil, fmt.Errorf("secret %q has no trusted CA: %w", SecretRoot, err)
			}
			if b.Roots, err = ParsePEM(data); err != nil {
				return nil, fmt.Errorf("secret %q: %w", SecretRoot, err)
			}
		}
	}
	if b.Chain == nil {
		for _, ds := range warming {
			if ds.GetName() == SecretWorkload {
				return nil, fmt.Errorf("%w: secret %q is still warming: the istio agent has not got a certificate from istiod yet; check the istio-proxy logs", ErrEmptyConfigDump, SecretWorkload)
			}
		}
		sort.Strings(names)
		return nil, fmt.Errorf("%w: no secret %q among the active secrets [%s]", ErrEmptyConfigDump, SecretWorkload, strings.Join(names, " "))
	}
	if b.Roots == nil {
		return nil, fmt.Errorf("%w: no secret %q (trust root) among the active secrets", ErrEmptyConfigDump, SecretRoot)
	}
	return splitRoots(b)
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

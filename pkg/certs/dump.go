package certs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Kinds of dump --file reads, as ParseDump names them in Origin.
const (
	DumpEnvoy   = "Envoy config_dump"
	DumpZtunnel = "ztunnel config_dump"
)

// DumpFormats says what ParseDump reads, for errors and help.
const DumpFormats = `an Envoy admin config_dump (curl localhost:15000/config_dump: {"configs": [...]} with a SecretsConfigDump, ` +
	`or only the secrets with ?resource=dynamic_active_secrets; istioctl proxy-config secret -o json), ` +
	`or a ztunnel config_dump (curl localhost:15000/config_dump on ztunnel: {"certificates": [...]}; istioctl ztunnel-config certificates -o json)`

// IsDump tells JSON (a dump) from PEM by the first byte that is not space.
func IsDump(data []byte) bool {
	t := bytes.TrimSpace(data)
	return len(t) > 0 && (t[0] == '{' || t[0] == '[')
}

// ParseDump reads a saved dump: Envoy's (the workload's secret "default",
// one bundle) or ztunnel's (one bundle per identity). It returns the kind of
// dump for Origin. A bundle whose State is not ready has no certificates.
func ParseDump(data []byte) ([]*Bundle, string, error) {
	var top any
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, "", fmt.Errorf("not valid JSON (%v); expected %s", err, DumpFormats)
	}
	switch v := top.(type) {
	case []any:
		// istioctl ztunnel-config certificates -o json: the list alone.
		bs, err := ztunnelBundles(json.RawMessage(data))
		return bs, DumpZtunnel, err
	case map[string]any:
		if _, ok := v["certificates"]; ok {
			var d struct {
				Certificates json.RawMessage `json:"certificates"`
			}
			if err := json.Unmarshal(data, &d); err != nil {
				return nil, "", fmt.Errorf("malformed ztunnel config_dump: %w", err)
			}
			bs, err := ztunnelBundles(d.Certificates)
			return bs, DumpZtunnel, err
		}
		if _, ok := v["configs"]; ok || hasSecretsKey(v) {
			secrets, err := envoySecrets(data)
			if err != nil {
				return nil, "", err
			}
			b, err := envoyBundle(secrets)
			if err != nil {
				return nil, "", err
			}
			return []*Bundle{b}, DumpEnvoy, nil
		}
		return nil, "", fmt.Errorf("JSON with keys [%s] is no dump this command reads; expected %s", strings.Join(keys(v), " "), DumpFormats)
	}
	return nil, "", fmt.Errorf("JSON %T is no dump this command reads; expected %s", top, DumpFormats)
}

// hasSecretsKey finds a bare SecretsConfigDump in either JSON casing.
func hasSecretsKey(m map[string]any) bool {
	for _, k := range []string{"dynamic_active_secrets", "dynamicActiveSecrets", "dynamic_warming_secrets", "dynamicWarmingSecrets", "static_secrets", "staticSecrets"} {
		if _, ok := m[k]; ok {
			return true
		}
	}
	return false
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	if len(out) > 6 {
		out = append(out[:6], "…")
	}
	return out
}

// pendingVerdict judges a bundle that has no certificates: a warming
// secret or an initializing identity is pending; anything else failed.
func pendingVerdict(b *Bundle) Verdict {
	var msg string
	pending := true
	if b.Identity != "" {
		msg, pending = ztunnelPending(b)
	} else {
		msg = warmingMessage
	}
	return Verdict{Pending: pending, Checks: []Check{{Name: CheckState, Message: msg}}}
}

package certs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadFiles(t *testing.T) {
	dir := "testdata/outputcerts"
	chainOnly := filepath.Join(t.TempDir(), "chain.pem")
	data, err := os.ReadFile(filepath.Join(dir, "cert-chain.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(chainOnly, data, 0o600); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	garbage := filepath.Join(t.TempDir(), "x.pem")
	if err := os.WriteFile(garbage, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	rootOnly := filepath.Join(t.TempDir(), "root-cert.pem")
	if err := os.WriteFile(rootOnly, data, 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name         string
		paths        []string
		chain, roots int
		wantErr      string
	}{
		{name: "OUTPUT_CERTS directory, key skipped", paths: []string{dir}, chain: 1, roots: 1},
		{name: "chain file and root file", paths: []string{filepath.Join(dir, "root-cert.pem"), filepath.Join(dir, "cert-chain.pem")}, chain: 1, roots: 1},
		{name: "chain with appended self-signed root", paths: []string{chainOnly}, chain: 1, roots: 1},
		{name: "missing", paths: []string{"testdata/nope.pem"}, wantErr: "reading --file testdata/nope.pem: stat testdata/nope.pem: no such file or directory"},
		{name: "empty directory", paths: []string{empty}, wantErr: "--file directory " + empty + " has no *.pem, *.crt or *.cert files"},
		{name: "not PEM", paths: []string{garbage}, wantErr: "reading --file " + garbage + ": no PEM certificate found; --file takes PEM certificates or " + DumpFormats},
		{name: "roots only", paths: []string{rootOnly}, wantErr: "only root certificates found, no workload certificate chain"},
		{name: "none", wantErr: "no --file given"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs, err := LoadFiles(tt.paths)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(bs) != 1 {
				t.Fatalf("%d bundles, want 1", len(bs))
			}
			b := bs[0]
			if len(b.Chain) != tt.chain || len(b.Roots) != tt.roots {
				t.Errorf("chain %d roots %d, want %d %d", len(b.Chain), len(b.Roots), tt.chain, tt.roots)
			}
			if !strings.HasPrefix(b.Origin, "file ") || b.Source != SourceFile {
				t.Errorf("origin %q source %q", b.Origin, b.Source)
			}
		})
	}
}

func TestParsePEM(t *testing.T) {
	tests := []struct {
		in, wantErr string
	}{
		{"", "no data"},
		{"garbage", "no PEM certificate found"},
		{"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "PEM block 1 is not a valid certificate: x509: malformed certificate"},
		{"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n", "no PEM certificate found"},
	}
	for _, tt := range tests {
		_, err := ParsePEM([]byte(tt.in))
		if err == nil || err.Error() != tt.wantErr {
			t.Errorf("ParsePEM(%q) error = %v, want %q", tt.in, err, tt.wantErr)
		}
	}
}

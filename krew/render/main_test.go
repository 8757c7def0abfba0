package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

type manifest struct {
	Metadata struct{ Name string }
	Spec     struct {
		Version          string
		ShortDescription string `json:"shortDescription"`
		Description      string
		Caveats          string
		Platforms        []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			}
			URI    string
			Sha256 string
			Bin    string
		}
	}
}

// archives are the files .goreleaser.yaml publishes, one per platform.
var archives = []string{
	"kubectl-mesh_linux_amd64.tar.gz", "kubectl-mesh_linux_arm64.tar.gz",
	"kubectl-mesh_darwin_amd64.tar.gz", "kubectl-mesh_darwin_arm64.tar.gz",
	"kubectl-mesh_windows_amd64.zip", "kubectl-mesh_windows_arm64.zip",
}

func fakeSums() map[string]string {
	sums := map[string]string{}
	for i, a := range archives {
		sums[a] = fmt.Sprintf("%064x", i+0xa0)
	}
	return sums
}

func TestRenderManifest(t *testing.T) {
	tmpl, err := os.ReadFile("../mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out, err := render(string(tmpl), "v1.2.3", fakeSums(), false)
	if err != nil {
		t.Fatal(err)
	}
	var m manifest
	// krew's own validator checks the schema (make check-release); this
	// checks what the release fills in.
	if err := yaml.Unmarshal(out, &m); err != nil {
		t.Fatalf("rendered manifest is not YAML: %v\n%s", err, out)
	}
	if m.Metadata.Name != "mesh" || m.Spec.Version != "v1.2.3" {
		t.Errorf("name %q version %q, want mesh v1.2.3", m.Metadata.Name, m.Spec.Version)
	}
	if n := len(m.Spec.ShortDescription); n == 0 || n > 50 {
		t.Errorf("shortDescription has %d characters, want 1..50: %q", n, m.Spec.ShortDescription)
	}
	for _, must := range []string{"Istio", "SSH", "privileged pod"} {
		if !strings.Contains(m.Spec.Description, must) {
			t.Errorf("description does not mention %q", must)
		}
	}
	if !strings.Contains(m.Spec.Caveats, "kubectl_complete-mesh") {
		t.Error("caveats do not explain the completion helper")
	}
	if strings.Contains(string(out), "{{") || strings.Contains(string(out), "krew-release-bot") {
		t.Errorf("template syntax or template comment left in the output:\n%s", out)
	}
	sums := fakeSums()
	if len(m.Spec.Platforms) != len(archives) {
		t.Fatalf("%d platforms, want %d", len(m.Spec.Platforms), len(archives))
	}
	for i, p := range m.Spec.Platforms {
		goos, arch := p.Selector.MatchLabels["os"], p.Selector.MatchLabels["arch"]
		ext, bin := ".tar.gz", "kubectl-mesh"
		if goos == "windows" {
			ext, bin = ".zip", "kubectl-mesh.exe"
		}
		file := "kubectl-mesh_" + goos + "_" + arch + ext
		wantURI := "https://github.com/kubectl-mesh/kubectl-mesh/releases/download/v1.2.3/" + file
		if p.URI != wantURI || p.Sha256 != sums[file] || p.Bin != bin {
			t.Errorf("platform %d (%s/%s): uri %q sha256 %q bin %q; want %q %q %q", i, goos, arch, p.URI, p.Sha256, p.Bin, wantURI, sums[file], bin)
		}
	}
}

func TestRenderErrors(t *testing.T) {
	tests := []struct {
		name, tmpl  string
		placeholder bool
		want, err   string
	}{
		{"missing checksum", `{{ addURIAndSha "https://x/{{ .TagName }}/a.tar.gz" .TagName }}`, false,
			"", `template: manifest:1:3: executing "manifest" at <addURIAndSha "https://x/{{ .TagName }}/a.tar.gz" .TagName>: error calling addURIAndSha: no checksum for a.tar.gz`},
		{"placeholder", `{{ addURIAndSha "https://x/{{ .TagName }}/a.tar.gz" .TagName }}`, true,
			"uri: https://x/v1/a.tar.gz\n    sha256: " + placeholderSHA, ""},
		{"unknown field", `{{ .Tag }}`, false,
			"", `template: manifest:1:3: executing "manifest" at <.Tag>: can't evaluate field Tag in type struct { TagName string }`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := render(tt.tmpl, "v1", nil, tt.placeholder)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.err || string(out) != tt.want {
				t.Errorf("render = %q, %q; want %q, %q", out, got, tt.want, tt.err)
			}
		})
	}
}

func TestParseChecksums(t *testing.T) {
	a := strings.Repeat("ab", 32)
	tests := []struct {
		name, in string
		want     map[string]string
		err      string
	}{
		{"goreleaser", a + "  kubectl-mesh_linux_amd64.tar.gz\n\n" + strings.ToUpper(a) + " *kubectl-mesh_windows_amd64.zip\n",
			map[string]string{"kubectl-mesh_linux_amd64.tar.gz": a, "kubectl-mesh_windows_amd64.zip": a}, ""},
		{"short digest", "abc  file\n", nil, `line 1: want "<sha256>  <file>", got "abc  file"`},
		{"not hex", strings.Repeat("zz", 32) + "  file\n", nil, `line 1: want "<sha256>  <file>", got "` + strings.Repeat("zz", 32) + `  file"`},
		{"no file", a + "\n", nil, `line 1: want "<sha256>  <file>", got "` + a + `"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseChecksums(strings.NewReader(tt.in))
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if gotErr != tt.err {
				t.Fatalf("err = %q, want %q", gotErr, tt.err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) && tt.err == "" {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

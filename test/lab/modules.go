package lab

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
)

// Module versions the lab reads files from (CRDs, charts, KWOK stages). They
// come from the Go module cache, so the lab needs no network beyond the Go
// module proxy and never vendors third-party manifests.
const (
	IstioModule      = "istio.io/istio@v0.0.0-20260827124520-eed52ebb66ad" // Istio 1.31.0
	IstioVersion     = "1.31.0"
	KwokModule       = "sigs.k8s.io/kwok@v0.8.0"
	GatewayAPIModule = "sigs.k8s.io/gateway-api@v1.6.0"

	EtcdVersion = "v3.6.5"
	KubeVersion = "v1.35.0"
	KwokVersion = "v0.8.0"
)

// moduleDir downloads (or finds in the cache) a module and returns its
// directory.
func moduleDir(mod string) (string, error) {
	tmp, err := os.MkdirTemp("", "lab-mod-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("go", "mod", "download", "-json", mod)
	cmd.Dir = tmp // outside any module, so no go.mod is consulted or changed
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return "", fmt.Errorf("go mod download %s: %w: %s%s", mod, err, ee.Stderr, out)
		}
		return "", fmt.Errorf("go mod download %s: %w", mod, err)
	}
	var info struct {
		Dir   string
		Error string
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return "", fmt.Errorf("go mod download %s: %w", mod, err)
	}
	if info.Error != "" || info.Dir == "" {
		return "", fmt.Errorf("go mod download %s: %s", mod, info.Error)
	}
	return info.Dir, nil
}

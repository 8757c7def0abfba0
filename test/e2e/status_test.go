package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	securityv1beta1 "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/inject"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

func TestStatus(t *testing.T) {
	env := labtest.Get(t)
	ctx := context.Background()
	ns := env.Namespace(t, nil)
	env.Deployment(t, ns, "before", nil, 2) // created before injection: no sidecar
	env.Mesh(t, "enable-injection", ns)
	env.Deployment(t, ns, "after", nil, 1) // injected by istiod
	pa := &securityv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns}}
	pa.Spec.Mtls = &securityv1beta1.PeerAuthentication_MutualTLS{Mode: securityv1beta1.PeerAuthentication_MutualTLS_STRICT}
	if _, err := env.Istio.SecurityV1().PeerAuthentications(ns).Create(ctx, pa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	res := env.Mesh(t, "status", "-n", ns, "-o", "json")
	if res.ExitCode != 0 {
		t.Fatalf("status: %v", res.Err)
	}
	var rep inject.Report
	if err := json.Unmarshal([]byte(res.Stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.InjectorFound || len(rep.Namespaces) != 1 {
		t.Fatalf("report = %+v", rep)
	}
	got, _ := json.Marshal(rep.Namespaces[0])
	want := fmt.Sprintf(`{"name":%q,"injection":"sidecar","revision":"default","workloads":2,"workloadsWithSidecar":1,"pods":3,"podsWithSidecar":1,"podsNeedingRestart":2,"needRestart":["deployment/before"],"sidecarVersions":["1.31.0"],"versionSkew":false,"mtls":"STRICT (namespace policy default)"}`, ns)
	if string(got) != want {
		t.Fatalf("namespace status =\n%s\nwant\n%s", got, want)
	}

	res = env.Mesh(t, "status", "-A")
	var row string
	for _, l := range strings.Split(res.Stdout, "\n") {
		if strings.HasPrefix(l, ns+" ") {
			row = strings.Join(strings.Fields(l), " ")
		}
	}
	if res.ExitCode != 0 || row != ns+" sidecar 1/2 2 1.31.0 STRICT" {
		t.Fatalf("status -A: exit %d, row %q\n%s", res.ExitCode, row, res.Stdout)
	}
}

package cmd

import (
	"testing"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/options/fake"
)

func TestStatus(t *testing.T) {
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "istio-sidecar-injector", Namespace: "istio-system", Labels: map[string]string{"istio.io/rev": "default"}},
		Data:       map[string]string{"values": `{"revision":"","global":{"tag":"1.31.0"}}`, "config": "policy: enabled\n"},
	}
	kube := []runtime.Object{meshInjector(""), meshInjector("canary"), cm,
		testNamespace("shop", "istio-injection=enabled"), testNamespace("cart", "istio.io/rev=canary", "istio-injection=enabled"),
		testNamespace("plain"), testNamespace("amb", "istio.io/dataplane-mode=ambient"), testNamespace("istio-system")}
	kube = append(kube, testWorkload("shop", "web", false)...)
	kube = append(kube, testWorkload("shop", "api", true)...)
	kube = append(kube, testWorkload("cart", "cart", true)...)
	kube = append(kube, testWorkload("plain", "batch", false)...)
	mode := func(ns, name string, m securityv1beta1.PeerAuthentication_MutualTLS_Mode, sel map[string]string) runtime.Object {
		pa := &securityv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		pa.Spec.Mtls = &securityv1beta1.PeerAuthentication_MutualTLS{Mode: m}
		if sel != nil {
			pa.Spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: sel}
		}
		return pa
	}
	istio := []runtime.Object{
		mode("istio-system", "default", securityv1beta1.PeerAuthentication_MutualTLS_STRICT, nil),
		mode("plain", "default", securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE, nil),
		mode("shop", "web", securityv1beta1.PeerAuthentication_MutualTLS_DISABLE, map[string]string{"app": "web"}),
	}
	tests := []struct {
		name    string
		args    []string
		wantOut string
		wantErr string
	}{
		{name: "all namespaces", args: []string{"status", "-A"}, wantOut: `REVISION   TAGS   VERSION   INJECTOR                        ISTIOD
canary     -      -         istio-sidecar-injector-canary   -
default    -      1.31.0    istio-sidecar-injector          -

NAMESPACE      INJECTION              WORKLOADS WITH SIDECAR   PODS NEEDING RESTART   SIDECAR VERSIONS   MTLS
amb            ambient (no ztunnel)   0/0                      0                      -                  STRICT
cart           sidecar                1/1                      0                      1.31.0             STRICT
istio-system   off                    0/0                      0                      -                  STRICT
plain          off                    0/1                      0                      -                  PERMISSIVE
shop           sidecar                1/2                      1                      1.31.0             STRICT
`},
		{name: "one namespace, wide", args: []string{"status", "-n", "shop", "-o", "wide"}, wantOut: `REVISION   TAGS   VERSION   INJECTOR                        ISTIOD
canary     -      -         istio-sidecar-injector-canary   -
default    -      1.31.0    istio-sidecar-injector          -

NAMESPACE   INJECTION   WORKLOADS WITH SIDECAR   PODS NEEDING RESTART   SIDECAR VERSIONS   MTLS                                        NEEDS RESTART    CONFLICTS   WORKLOAD POLICIES
shop        sidecar     1/2                      1                      1.31.0             STRICT (mesh policy istio-system/default)   deployment/web   -           1
`},
		{name: "conflicts in wide", args: []string{"status", "-n", "cart", "-o", "wide"}, wantOut: `REVISION   TAGS   VERSION   INJECTOR                        ISTIOD
canary     -      -         istio-sidecar-injector-canary   -
default    -      1.31.0    istio-sidecar-injector          -

NAMESPACE   INJECTION   WORKLOADS WITH SIDECAR   PODS NEEDING RESTART   SIDECAR VERSIONS   MTLS                                        NEEDS RESTART   CONFLICTS                                               WORKLOAD POLICIES
cart        sidecar     1/1                      0                      1.31.0             STRICT (mesh policy istio-system/default)   -               istio-injection=enabled overrides istio.io/rev=canary   0
`},
		{name: "json", args: []string{"status", "-n", "plain", "-o", "json"}, wantOut: `{
  "controlPlanes": [
    {
      "revision": "canary",
      "injector": "istio-sidecar-injector-canary"
    },
    {
      "revision": "default",
      "version": "1.31.0",
      "namespace": "istio-system",
      "injector": "istio-sidecar-injector"
    }
  ],
  "injectorFound": true,
  "namespaces": [
    {
      "name": "plain",
      "injection": "off",
      "workloads": 1,
      "workloadsWithSidecar": 0,
      "pods": 1,
      "podsWithSidecar": 0,
      "podsNeedingRestart": 0,
      "versionSkew": false,
      "mtls": "PERMISSIVE (namespace policy default)"
    }
  ]
}
`},
		{name: "unknown namespace", args: []string{"status", "-n", "nope"}, wantErr: `namespace "nope" not found; check the name with: kubectl get namespaces`},
		{name: "bad output", args: []string{"status", "-o", "table"}, wantErr: `--output must be wide, json or yaml, got "table"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fake.New(kube, istio)
			cmd := NewCmdMesh(f.Options)
			cmd.SetArgs(tt.args)
			err := cmd.Execute()
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error = %v, want %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.Out.String() != tt.wantOut {
				t.Errorf("stdout =\n%s\nwant\n%s", f.Out.String(), tt.wantOut)
			}
			if f.ErrOut.String() != "" {
				t.Errorf("stderr = %q", f.ErrOut.String())
			}
		})
	}
}

package cmd

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/options/fake"
)

func TestVersionClient(t *testing.T) {
	tests := []struct {
		args    []string
		want    string
		wantErr string
	}{
		{args: []string{"version", "--client"},
			want: fmt.Sprintf("Client Version: dev (commit none, built unknown, %s, %s/%s)\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)},
		{args: []string{"version", "--client", "-o", "json"},
			want: fmt.Sprintf("{\n  \"clientVersion\": {\n    \"version\": \"dev\",\n    \"commit\": \"none\",\n    \"date\": \"unknown\",\n    \"goVersion\": %q,\n    \"platform\": \"%s/%s\"\n  }\n}\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)},
		{args: []string{"version", "--client", "-o", "go-template={{.clientVersion.version}} {{.clientVersion.commit}}"}, want: "dev none"},
		{args: []string{"version", "-o", "table"}, wantErr: `unable to match a printer suitable for the output format "table", allowed formats are: json,yaml,go-template,go-template-file,template,templatefile,jsonpath,jsonpath-as-json,jsonpath-file`},
		{args: []string{"version", "extra"}, wantErr: `unknown command "extra" for "kubectl mesh version"`},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.args), func(t *testing.T) {
			f := fake.New(nil, nil)
			cmd := NewCmdMesh(f.Options)
			cmd.SetArgs(tt.args)
			err := cmd.Execute()
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Out.String(); got != tt.want {
				t.Errorf("stdout =\n%s\nwant\n%s", got, tt.want)
			}
			if len(f.Kube.Actions()) != 0 {
				t.Errorf("--client made API calls: %v", f.Kube.Actions())
			}
		})
	}
}

func TestVersionServer(t *testing.T) {
	injector := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "istio-sidecar-injector", Labels: map[string]string{"istio.io/rev": "default"}},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "namespace.sidecar-injector.istio.io"}},
	}
	canary := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "istio-sidecar-injector-canary", Labels: map[string]string{"istio.io/rev": "canary"}},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "rev.namespace.sidecar-injector.istio.io"}},
	}
	tag := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "istio-revision-tag-prod", Labels: map[string]string{"istio.io/rev": "canary", "istio.io/tag": "prod"}},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "rev.namespace.sidecar-injector.istio.io"}},
	}
	other := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "cert-manager"},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "webhook.cert-manager.io"}},
	}
	cm := func(name, rev, values string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "istio-system", Labels: map[string]string{"istio.io/rev": rev}},
			Data: map[string]string{"values": values}}
	}
	objs := []kruntime.Object{injector, canary, tag, other,
		cm("istio-sidecar-injector", "default", `{"global":{"tag":"1.31.0"},"revision":""}`),
		cm("istio-sidecar-injector-canary", "canary", `{"global":{"tag":"1.32.0"},"revision":"canary"}`),
	}
	f := fake.New(objs, nil)
	cmd := NewCmdMesh(f.Options)
	cmd.SetArgs([]string{"version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`Client Version: dev (commit none, built unknown, %s, %s/%s)
Server Version: v0.0.0-master+$Format:%%H$
Istio Control Plane: 1.32.0 (revision canary; tags prod; injector istio-sidecar-injector-canary)
Istio Control Plane: 1.31.0 (revision default; injector istio-sidecar-injector)
`, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if got := f.Out.String(); got != want {
		t.Errorf("stdout =\n%s\nwant\n%s", got, want)
	}
}

// TestVersionNamespaceAdmin: refused reads of the control plane are notes,
// not "not installed".
func TestVersionNamespaceAdmin(t *testing.T) {
	f := fake.New([]kruntime.Object{meshInjector("")}, nil)
	namespaceAdmin(f, false)
	cmd := NewCmdMesh(f.Options)
	cmd.SetArgs([]string{"version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`Client Version: dev (commit none, built unknown, %s, %s/%s)
Server Version: v0.0.0-master+$Format:%%H$
Istio: not readable with your permissions (see the notes)
`, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if got := f.Out.String(); got != want {
		t.Errorf("stdout =\n%s\nwant\n%s", got, want)
	}
	if got := f.ErrOut.String(); !strings.HasPrefix(got, "note: could not check the sidecar injector webhooks") || strings.Count(got, "note: ") != 4 {
		t.Errorf("stderr =\n%s", got)
	}
}

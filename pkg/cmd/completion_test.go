package cmd

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/options/fake"
)

// testKubeconfig has two contexts; the current one defaults to namespace shop.
const testKubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster: {server: "https://127.0.0.1:1"}
- name: prod
  cluster: {server: "https://127.0.0.1:2"}
users:
- name: admin
  user: {token: "t1"}
- name: viewer
  user: {token: "t2"}
contexts:
- name: lab-admin
  context: {cluster: lab, user: admin, namespace: shop}
- name: prod-viewer
  context: {cluster: prod, user: viewer}
current-context: lab-admin
`

func writeKubeconfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(path, []byte(testKubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func completionObjects() []runtime.Object {
	ns := func(name string) runtime.Object {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	}
	pod := func(ns, name string) runtime.Object {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	}
	svc := func(ns, name string) runtime.Object {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	}
	injector := func(name string, labels map[string]string) runtime.Object {
		return &admissionregistrationv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "rev.namespace.sidecar-injector.istio.io"}},
		}
	}
	istiod := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "istiod-1-31", Labels: map[string]string{"app": "istiod", "istio.io/rev": "1-31"}},
		Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "discovery", Image: "docker.io/istio/pilot:1.31.0"}},
		}}},
	}
	return []runtime.Object{
		ns("default"), ns("istio-system"), ns("shop"), ns("shipping"),
		pod("shop", "frontend-7d9f"), pod("shop", "backend-5c8b"), pod("default", "other-1"),
		svc("shop", "frontend"), svc("shop", "backend"), svc("default", "kubernetes"),
		injector("istio-sidecar-injector", nil),
		injector("istio-sidecar-injector-1-31", map[string]string{"istio.io/rev": "1-31"}),
		injector("istio-revision-tag-stable", map[string]string{"istio.io/rev": "1-31", "istio.io/tag": "stable"}),
		istiod,
	}
}

// newCompletionRoot is the real root plus one test command per exported
// completion helper, since the commands that use them live elsewhere.
func newCompletionRoot(f *fake.Options) *cobra.Command {
	root := NewCmdMesh(f.Options)
	for name, fn := range map[string]cobra.CompletionFunc{
		"pods":       CompletePods(f.Options),
		"services":   CompleteServices(f.Options),
		"revisions":  CompleteRevisions(f.Options),
		"namespaces": CompleteNamespaces(f.Options),
	} {
		root.AddCommand(&cobra.Command{Use: "test-" + name, ValidArgsFunction: fn, Run: func(*cobra.Command, []string) {}})
	}
	return root
}

func TestCompletion(t *testing.T) {
	tests := []struct {
		name string
		args []string
		out  string
	}{
		// Only prefixes of commands from this file: the others come and go.
		{"subcommands", []string{"test-"},
			"test-namespaces\ntest-pods\ntest-revisions\ntest-services\n:4\n"},
		{"subcommand prefix", []string{"compl"},
			"completion\tOutput a shell completion script\n:4\n"},
		{"namespace flag", []string{"version", "-n", ""},
			"default\nistio-system\nshipping\nshop\n:4\n"},
		{"namespace flag prefix", []string{"version", "--namespace", "sh"},
			"shipping\nshop\n:4\n"},
		{"namespace flag before subcommand", []string{"-n", "i"},
			"istio-system\n:4\n"},
		{"context flag", []string{"--context", ""},
			"lab-admin\nprod-viewer\n:4\n"},
		{"cluster flag", []string{"--cluster", "p"},
			"prod\n:4\n"},
		{"user flag", []string{"--user", ""},
			"admin\nviewer\n:4\n"},
		{"color flag", []string{"--color", ""},
			"auto\nalways\nnever\n:4\n"},
		{"version output flag", []string{"version", "-o", ""},
			"json\nyaml\n:4\n"},
		{"version takes no arguments", []string{"version", ""},
			":4\n"},
		{"completion shells", []string{"completion", ""},
			"bash\nzsh\nfish\npowershell\n:4\n"},
		{"pods in the context's namespace", []string{"test-pods", ""},
			"backend-5c8b\nfrontend-7d9f\n:4\n"},
		{"pods in -n", []string{"test-pods", "-n", "default", ""},
			"other-1\n:4\n"},
		{"pods by prefix", []string{"test-pods", "f"},
			"frontend-7d9f\n:4\n"},
		{"services", []string{"test-services", ""},
			"backend\nfrontend\n:4\n"},
		{"services in -n", []string{"-n", "default", "test-services", "k"},
			"kubernetes\n:4\n"},
		{"namespaces as arguments", []string{"test-namespaces", "de"},
			"default\n:4\n"},
		{"revisions and tags", []string{"test-revisions", ""},
			"1-31\tIstio 1.31.0\ndefault\tIstio revision\nstable\ttag of revision 1-31\n:4\n"},
		{"no match", []string{"test-pods", "zzz"},
			":4\n"},
		// The real commands.
		{"enable-injection namespaces", []string{"enable-injection", "sh"},
			"shipping\nshop\n:4\n"},
		{"restart skips namespaces already given", []string{"restart", "shop", "sh"},
			"shipping\n:4\n"},
		{"disable-injection namespaces", []string{"disable-injection", ""},
			"default\nistio-system\nshipping\nshop\n:4\n"},
		{"enable-injection --revision", []string{"enable-injection", "shop", "--revision", "s"},
			"stable\ttag of revision 1-31\n:4\n"},
		// --dry-run alone means client, so its value follows an "=";
		// fixed values are filtered by the shell.
		{"restart --dry-run=", []string{"restart", "--dry-run=s"},
			"none\nclient\nserver\n:4\n"},
		{"restart -o", []string{"restart", "-o", ""},
			"wide\njson\nyaml\n:4\n"},
		{"status takes no arguments", []string{"status", ""},
			":4\n"},
		{"status -o", []string{"status", "-o", ""},
			"wide\njson\nyaml\n:4\n"},
		{"certs pods", []string{"certs", "fr"},
			"frontend-7d9f\n:4\n"},
		{"certs second argument", []string{"certs", "frontend-7d9f", ""},
			":4\n"},
		{"certs --compare", []string{"certs", "frontend-7d9f", "--compare", "b"},
			"backend-5c8b\n:4\n"},
		{"certs -o", []string{"certs", "-o", "p"},
			"table\nwide\npem\njson\nyaml\n:4\n"},
		{"sniff pods in -n", []string{"sniff", "-n", "default", ""},
			"other-1\n:4\n"},
		{"sniff --via", []string{"sniff", "--via", ""},
			"auto\nssh\npod\n:4\n"},
		{"sniff --expect", []string{"sniff", "--expect", ""},
			"encrypted\nplaintext\nistio-mtls\n:4\n"},
		{"sniff -o", []string{"sniff", "-o", ""},
			"json\nyaml\n:4\n"},
		{"certs --source", []string{"certs", "--source", ""},
			"auto\nenvoy\nlegacy\nztunnel\nfile\n:4\n"},
		{"verify namespaces", []string{"verify", "default", "sh"},
			"shipping\nshop\n:4\n"},
		{"verify -o", []string{"verify", "-o", ""},
			"table\njson\nyaml\ndot\nmermaid\n:4\n"},
		{"split services", []string{"split", ""},
			"backend\nfrontend\n:4\n"},
		{"split services in -n after it", []string{"split", "-n", "default", "k"},
			"kubernetes\n:4\n"},
		{"split weights are not completed", []string{"split", "backend", ""},
			":4\n"},
		{"expose --api", []string{"expose", "frontend", "--api", ""},
			"istio\ngateway\n:4\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("KUBECONFIG", writeKubeconfig(t))
			f := fake.New(completionObjects(), nil)
			root := newCompletionRoot(f)
			root.SetArgs(append([]string{cobra.ShellCompRequestCmd}, tt.args...))
			if err := root.Execute(); err != nil {
				t.Fatalf("Execute: %v", err)
			}
			if got := f.Out.String(); got != tt.out {
				t.Errorf("stdout:\n%s\nwant:\n%s", got, tt.out)
			}
			if got, want := f.ErrOut.String(), "Completion ended with directive: ShellCompDirectiveNoFileComp\n"; got != want {
				t.Errorf("stderr = %q, want %q", got, want)
			}
		})
	}
}

// A cluster that cannot answer leaves no candidates (not file names) and a
// reason on stderr, which shells hide from the user.
func TestCompletionAPIError(t *testing.T) {
	t.Setenv("KUBECONFIG", writeKubeconfig(t))
	f := fake.New(nil, nil)
	f.Kube.PrependReactor("list", "namespaces", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New(`namespaces is forbidden: User "alice" cannot list resource "namespaces"`)
	})
	root := newCompletionRoot(f)
	root.SetArgs([]string{cobra.ShellCompRequestCmd, "-n", ""})
	if err := root.Execute(); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	if got, want := f.Out.String(), ":4\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	want := "completion: listing namespaces: namespaces is forbidden: User \"alice\" cannot list resource \"namespaces\"\n" +
		"Completion ended with directive: ShellCompDirectiveNoFileComp\n"
	if got := f.ErrOut.String(); got != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", got, want)
	}
}

func TestCompletionScripts(t *testing.T) {
	tests := []struct {
		shell string
		// marks start lines the script must hold to complete kubectl-mesh.
		marks []string
	}{
		{"bash", []string{"# bash completion V2 for kubectl-mesh", "complete -o default -F __start_kubectl-mesh kubectl-mesh"}},
		{"zsh", []string{"#compdef kubectl-mesh", "compdef _kubectl-mesh kubectl-mesh"}},
		{"fish", []string{"# fish completion for kubectl-mesh", "complete -c kubectl-mesh -n '__kubectl_mesh_clear_perform_completion_once_result'"}},
		{"powershell", []string{"# powershell completion for kubectl-mesh", "Register-ArgumentCompleter -CommandName 'kubectl-mesh' -ScriptBlock ${__kubectl_meshCompleterBlock}"}},
	}
	for _, tt := range tests {
		t.Run(tt.shell, func(t *testing.T) {
			f := fake.New(nil, nil)
			root := NewCmdMesh(f.Options)
			root.SetArgs([]string{"completion", tt.shell})
			if err := root.Execute(); err != nil {
				t.Fatalf("Execute: %v", err)
			}
			lines := strings.Split(f.Out.String(), "\n")
			for _, mark := range tt.marks {
				if !hasLineStarting(lines, mark) {
					t.Errorf("script has no line %q", mark)
				}
			}
			if f.ErrOut.Len() != 0 {
				t.Errorf("stderr = %q, want empty", f.ErrOut.String())
			}
		})
	}
}

func TestCompletionArgs(t *testing.T) {
	tests := []struct {
		args []string
		err  string
	}{
		{[]string{"completion"}, "name one shell: bash, zsh, fish, powershell"},
		{[]string{"completion", "bash", "zsh"}, "name one shell: bash, zsh, fish, powershell"},
		{[]string{"completion", "tcsh"}, `invalid argument "tcsh" for "kubectl mesh completion"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			f := fake.New(nil, nil)
			root := NewCmdMesh(f.Options)
			root.SetArgs(tt.args)
			err := root.Execute()
			if err == nil || err.Error() != tt.err {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
			if f.Out.Len() != 0 {
				t.Errorf("stdout = %q, want empty", f.Out.String())
			}
		})
	}
}

func hasLineStarting(lines []string, want string) bool {
	for _, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), want) {
			return true
		}
	}
	return false
}

package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/cmd"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/options"
	"github.com/kubectl-mesh/kubectl-mesh/test/lab"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// TestCompletionThroughKubectl completes `kubectl mesh …` the way a shell
// does: the real kubectl's __complete finds kubectl_complete-mesh on PATH,
// which runs the plugin binary, which asks the lab's API server.
func TestCompletionThroughKubectl(t *testing.T) {
	env := labtest.Get(t)
	ns := env.Namespace(t, nil)
	pathDir := installPluginWithHelper(t)
	kubectl := filepath.Join(env.Lab.BinDir, "kubectl-"+lab.KubeVersion)
	alice := env.UserKubeconfig(t, "alice", nil)

	tests := []struct {
		name       string
		kubeconfig string
		words      []string // typed after `kubectl mesh`; the last is being completed
		want       string   // exact stdout; "" means wantLines
		wantLines  []string // lines stdout must hold (the command list grows)
	}{
		{name: "subcommands", words: []string{""}, wantLines: []string{
			"completion\tOutput a shell completion script",
			"version\tPrint the plugin, Kubernetes and Istio control-plane versions",
			":4",
		}},
		{name: "subcommand prefix", words: []string{"vers"}, want: "version\tPrint the plugin, Kubernetes and Istio control-plane versions\n:4\n"},
		{name: "-n lists the test's namespace", words: []string{"-n", ns[:len(ns)-2]}, want: ns + "\n:4\n"},
		{name: "-n istio", words: []string{"-n", "istio-sys"}, want: "istio-system\n:4\n"},
		{name: "--namespace after a subcommand", words: []string{"version", "--namespace", "defa"}, want: "default\n:4\n"},
		{name: "--context from the kubeconfig", words: []string{"--context", ""}, want: lab.ContextName + "\n:4\n"},
		{name: "version -o", words: []string{"version", "-o", ""}, want: "json\nyaml\n:4\n"},
		{name: "completion shells", words: []string{"completion", "z"}, want: "zsh\n:4\n"},
		// A user who may not list namespaces gets no candidates (and no
		// file names), not an error in the middle of the command line.
		{name: "forbidden user", kubeconfig: alice, words: []string{"-n", ""}, want: ":4\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kc := tt.kubeconfig
			if kc == "" {
				kc = env.Kubeconfig
			}
			c := exec.Command(kubectl, append([]string{"__complete", "mesh"}, tt.words...)...)
			c.Env = append(os.Environ(), "PATH="+pathDir+string(os.PathListSeparator)+os.Getenv("PATH"), "KUBECONFIG="+kc)
			var out, errOut bytes.Buffer
			c.Stdout, c.Stderr = &out, &errOut
			if err := c.Run(); err != nil {
				t.Fatalf("kubectl __complete mesh %q: %v\n%s", tt.words, err, errOut.String())
			}
			if !strings.Contains(errOut.String(), "About to call: "+filepath.Join(pathDir, "kubectl_complete-mesh")) {
				t.Errorf("kubectl did not call the helper:\n%s", errOut.String())
			}
			got := out.String()
			if tt.wantLines == nil {
				if got != tt.want {
					t.Errorf("candidates:\n%s\nwant:\n%s", got, tt.want)
				}
				return
			}
			lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
			for _, w := range tt.wantLines {
				if !completionHasLine(lines, w) {
					t.Errorf("candidates have no line %q:\n%s", w, got)
				}
			}
			if lines[len(lines)-1] != ":4" {
				t.Errorf("last line %q, want the directive :4", lines[len(lines)-1])
			}
		})
	}
}

// TestCompletionHelpers runs the completion helpers that commands attach
// (pods, services, revisions) against the lab, through the real root command.
func TestCompletionHelpers(t *testing.T) {
	env := labtest.Get(t)
	ns := env.Namespace(t, nil)
	env.Deployment(t, ns, "web", map[string]string{"app": "web"}, 2)
	ctx := context.Background()
	for _, name := range []string{"web", "web-canary"} {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": "web"},
				Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
			},
		}
		if _, err := env.Kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pods, err := env.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	var podNames []string
	for _, p := range pods.Items {
		podNames = append(podNames, p.Name)
	}
	sort.Strings(podNames)
	prefix := podNames[0][:len(podNames[0])-1]
	var withPrefix []string
	for _, p := range podNames {
		if strings.HasPrefix(p, prefix) {
			withPrefix = append(withPrefix, p)
		}
	}

	tests := []struct {
		name  string
		words []string
		want  string
	}{
		{"pods", []string{"test-pods", "-n", ns, ""}, strings.Join(podNames, "\n") + "\n:4\n"},
		{"pods by prefix", []string{"test-pods", "-n", ns, prefix}, strings.Join(withPrefix, "\n") + "\n:4\n"},
		{"services", []string{"-n", ns, "test-services", "web"}, "web\nweb-canary\n:4\n"},
		{"services by prefix", []string{"-n", ns, "test-services", "web-"}, "web-canary\n:4\n"},
		{"revisions", []string{"test-revisions", ""}, "default\tIstio " + lab.IstioVersion + "\n:4\n"},
		// The commands themselves.
		{"certs pods", []string{"certs", "-n", ns, prefix}, strings.Join(withPrefix, "\n") + "\n:4\n"},
		{"sniff pods", []string{"-n", ns, "sniff", ""}, strings.Join(podNames, "\n") + "\n:4\n"},
		{"split services", []string{"split", "-n", ns, "web-"}, "web-canary\n:4\n"},
		{"restart namespaces", []string{"restart", ns[:len(ns)-1]}, ns + "\n:4\n"},
		{"enable-injection --revision", []string{"enable-injection", ns, "--revision", ""}, "default\tIstio " + lab.IstioVersion + "\n:4\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			o := options.New(genericiooptions.IOStreams{In: &bytes.Buffer{}, Out: &out, ErrOut: &errOut})
			root := cmd.NewCmdMesh(o)
			for name, fn := range map[string]cobra.CompletionFunc{
				"pods":      cmd.CompletePods(o),
				"services":  cmd.CompleteServices(o),
				"revisions": cmd.CompleteRevisions(o),
			} {
				root.AddCommand(&cobra.Command{Use: "test-" + name, ValidArgsFunction: fn, Run: func(*cobra.Command, []string) {}})
			}
			root.SetArgs(append([]string{cobra.ShellCompRequestCmd, "--kubeconfig", env.Kubeconfig}, tt.words...))
			if err := root.Execute(); err != nil {
				t.Fatal(err)
			}
			if got := out.String(); got != tt.want {
				t.Errorf("candidates:\n%s\nwant:\n%s\nstderr: %s", got, tt.want, errOut.String())
			}
		})
	}
}

// installPluginWithHelper builds kubectl-mesh and puts it with the completion helper
// in a directory for PATH, as `make install` does.
func installPluginWithHelper(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "kubectl-mesh"), "github.com/kubectl-mesh/kubectl-mesh/cmd/kubectl-mesh")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building kubectl-mesh: %v\n%s", err, out)
	}
	helper, err := os.ReadFile(filepath.Join("..", "..", "plugins", "kubectl_complete-mesh"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kubectl_complete-mesh"), helper, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func completionHasLine(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

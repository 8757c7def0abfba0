// Package labtest is the e2e tests' harness: one lab per `go test` run (or
// the lab `make lab-up` left running), a fresh namespace per test, and the
// real kubectl mesh command run in-process against it.
package labtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/cmd"
	"github.com/kubectl-mesh/kubectl-mesh/test/lab"
)

// Env is the shared lab as tests see it.
type Env struct {
	Lab        *lab.Lab
	Kubeconfig string
	RESTConfig *rest.Config
	Kube       kubernetes.Interface
	Istio      istioclient.Interface
	Dynamic    dynamic.Interface
}

// shared is the one lab of this test binary, set by Main.
var shared *Env

// Main starts (or reuses) the lab, runs the tests and stops the lab if this
// run started it. Use it as the package's TestMain. LAB_KEEP=1 leaves a lab
// it started running for inspection.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	cfg, err := lab.DefaultConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "labtest:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	l, err := lab.Up(ctx, cfg)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "labtest: starting the lab:", err)
		return 1
	}
	if !l.Reused && os.Getenv("LAB_KEEP") == "" {
		defer func() {
			if err := lab.Down(cfg); err != nil {
				fmt.Fprintln(os.Stderr, "labtest: stopping the lab:", err)
			}
		}()
	}
	env, err := newEnv(l)
	if err != nil {
		fmt.Fprintln(os.Stderr, "labtest:", err)
		return 1
	}
	shared = env
	return m.Run()
}

func newEnv(l *lab.Lab) (*Env, error) {
	cfg := rest.CopyConfig(l.RESTConfig)
	cfg.QPS, cfg.Burst = 200, 400
	e := &Env{Lab: l, Kubeconfig: l.Kubeconfig, RESTConfig: cfg}
	var err error
	if e.Kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if e.Istio, err = istioclient.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if e.Dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		return nil, err
	}
	return e, nil
}

// Get returns the shared lab. The package's TestMain must call Main.
func Get(t testing.TB) *Env {
	t.Helper()
	if shared == nil {
		t.Fatal("labtest.Get: no lab; the test package's TestMain must call labtest.Main(m)")
	}
	return shared
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9-]+`)

// Namespace creates a fresh namespace for the test, deleted when it ends.
func (e *Env) Namespace(t testing.TB, labels map[string]string) string {
	t.Helper()
	base := strings.Trim(unsafeChars.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(base) > 40 {
		base = strings.TrimRight(base[:40], "-")
	}
	name := fmt.Sprintf("t-%s-%04x", base, rand.IntN(0x10000))
	ctx := context.Background()
	_, err := e.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = e.Kube.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	// Pods are refused until the controller-manager has created the
	// namespace's default ServiceAccount.
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := e.Kube.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("namespace %s has no default service account after 30s: %v", name, err)
	}
	return name
}

// Result is one run of kubectl mesh.
type Result struct {
	Stdout, Stderr string
	ExitCode       int
	// Err is nil when ExitCode is 0, else the error line printed on stderr.
	Err error
}

// Mesh runs the real kubectl mesh command in-process against the lab as the
// admin user. Pass --kubeconfig yourself to act as someone else: the last
// --kubeconfig wins.
func (e *Env) Mesh(t testing.TB, args ...string) Result {
	t.Helper()
	return RunMesh(append([]string{"--kubeconfig", e.Kubeconfig}, args...), "")
}

// RunMesh runs kubectl mesh in-process with args and stdin, as the binary
// would (same entry point, same exit codes).
func RunMesh(args []string, stdin string) Result {
	var out, errOut bytes.Buffer
	code := cmd.Main(genericiooptions.IOStreams{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut}, args)
	r := Result{Stdout: out.String(), Stderr: errOut.String(), ExitCode: code}
	if code != 0 {
		msg := strings.TrimSpace(r.Stderr)
		if i := strings.LastIndex(msg, "error: "); i >= 0 {
			msg = msg[i:]
		}
		r.Err = errors.New(msg)
	}
	return r
}

// UserKubeconfig writes a kubeconfig for a client-certificate user (with
// optional groups) who has no rights until the test binds some.
func (e *Env) UserKubeconfig(t testing.TB, user string, groups []string) string {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile, err := e.Lab.PKI.IssueClient(dir, user, groups)
	if err != nil {
		t.Fatalf("issuing a certificate for %s: %v", user, err)
	}
	path := filepath.Join(dir, "kubeconfig")
	if err := lab.WriteKubeconfig(path, e.Lab.PKI.CA.CertFile, certFile, keyFile, user); err != nil {
		t.Fatal(err)
	}
	return path
}

// Grant gives user the rules, in namespace ns or cluster-wide when ns is
// "", through a role and binding named name that the test deletes at its
// end. RBAC takes a moment to apply: wait before relying on it.
func (e *Env) Grant(t testing.TB, ns, name, user string, rules []rbacv1.PolicyRule) {
	t.Helper()
	ctx := context.Background()
	rbac := e.Kube.RbacV1()
	subjects := []rbacv1.Subject{{Kind: "User", APIGroup: rbacv1.GroupName, Name: user}}
	var err error
	if ns == "" {
		_, err = rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{})
		if err == nil {
			_, err = rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name}, Subjects: subjects}, metav1.CreateOptions{})
		}
	} else {
		_, err = rbac.Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Rules: rules}, metav1.CreateOptions{})
		if err == nil {
			_, err = rbac.RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}, Subjects: subjects}, metav1.CreateOptions{})
		}
	}
	t.Cleanup(func() {
		ctx := context.Background()
		if ns == "" {
			_ = rbac.ClusterRoleBindings().Delete(ctx, name, metav1.DeleteOptions{})
			_ = rbac.ClusterRoles().Delete(ctx, name, metav1.DeleteOptions{})
			return
		}
		_ = rbac.RoleBindings(ns).Delete(ctx, name, metav1.DeleteOptions{})
		_ = rbac.Roles(ns).Delete(ctx, name, metav1.DeleteOptions{})
	})
	if err != nil {
		t.Fatalf("granting %s to %s: %v", name, user, err)
	}
}

// Deployment creates a simple Deployment (label app=name plus labels, grace
// period 0) and waits until all its replicas are available.
func (e *Env) Deployment(t testing.TB, ns, name string, labels map[string]string, replicas int32) *appsv1.Deployment {
	t.Helper()
	podLabels := map[string]string{"app": name}
	for k, v := range labels {
		podLabels[k] = v
	}
	zero := int64(0)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: podLabels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: podLabels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: &zero,
					Containers: []corev1.Container{{Name: "app", Image: "kubectl-mesh-lab/" + name,
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}}},
				},
			},
		},
	}
	ctx := context.Background()
	created, err := e.Kube.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating deployment %s/%s: %v", ns, name, err)
	}
	if err := lab.WaitDeploymentReady(ctx, e.Kube, ns, name, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	return created
}

// CanaryIstiod starts a second istiod, revision canary, with its ConfigMaps
// and injector webhook, for the test's duration: t.Cleanup stops it by PID
// and deletes its objects. Only one runs at a time (fixed ports), so tests
// using it must not run in parallel.
func (e *Env) CanaryIstiod(t testing.TB) *lab.Canary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := e.Lab.StartCanary(ctx)
	if err != nil {
		t.Fatalf("starting the canary istiod: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(context.Background()); err != nil {
			t.Errorf("stopping the canary istiod: %v", err)
		}
	})
	return c
}

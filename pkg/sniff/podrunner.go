package sniff

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/remotecommand"
	watchtools "k8s.io/client-go/tools/watch"
	utilexec "k8s.io/client-go/util/exec"
	"k8s.io/utils/ptr"
)

// DefaultImage has tcpdump, timeout and sh.
const DefaultImage = "docker.io/nicolaka/netshoot:v0.13"

// PodRunnerConfig is `--via pod`: a short-lived privileged pod on the node.
type PodRunnerConfig struct {
	Kube      kubernetes.Interface
	REST      *rest.Config
	Namespace string
	Node      string
	Image     string
	// Deadline is the pod's activeDeadlineSeconds: it dies by then whatever
	// happens to this process.
	Deadline time.Duration
	// StartTimeout bounds the wait for the pod to run.
	StartTimeout time.Duration
}

// CapturePod is the pod spec `--via pod` creates: host network, raw-socket
// capabilities, tolerating every taint, no sidecar, and a deadline.
func CapturePod(cfg PodRunnerConfig) *corev1.Pod {
	secs := int64(cfg.Deadline / time.Second)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "mesh-sniff-",
			Namespace:    cfg.Namespace,
			Labels:       map[string]string{"app.kubernetes.io/name": "kubectl-mesh-sniff"},
			Annotations:  map[string]string{"sidecar.istio.io/inject": "false"},
		},
		Spec: corev1.PodSpec{
			NodeName:                      cfg.Node,
			HostNetwork:                   true,
			RestartPolicy:                 corev1.RestartPolicyNever,
			ActiveDeadlineSeconds:         &secs,
			TerminationGracePeriodSeconds: ptr.To[int64](0),
			AutomountServiceAccountToken:  ptr.To(false),
			Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{
				Name:    "sniff",
				Image:   cfg.Image,
				Command: []string{"sleep", fmt.Sprint(secs)},
				SecurityContext: &corev1.SecurityContext{
					Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_RAW", "NET_ADMIN"}},
				},
			}},
		},
	}
}

// PodRunner runs commands in the capture pod through exec.
type PodRunner struct {
	cfg PodRunnerConfig
	pod *corev1.Pod
}

// StartPodRunner creates the capture pod and waits until it runs. On
// failure the pod is already deleted.
func StartPodRunner(ctx context.Context, cfg PodRunnerConfig) (*PodRunner, error) {
	if cfg.Image == "" {
		cfg.Image = DefaultImage
	}
	if cfg.Deadline == 0 {
		cfg.Deadline = MaxCapture + time.Minute
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 2 * time.Minute
	}
	pod, err := cfg.Kube.CoreV1().Pods(cfg.Namespace).Create(ctx, CapturePod(cfg), metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating the capture pod in namespace %s: %w (or use --via ssh)", cfg.Namespace, err)
	}
	r := &PodRunner{cfg: cfg, pod: pod}
	if err := r.waitRunning(ctx); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func (r *PodRunner) waitRunning(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.StartTimeout)
	defer cancel()
	pods := r.cfg.Kube.CoreV1().Pods(r.pod.Namespace)
	sel := fields.OneTermEqualSelector("metadata.name", r.pod.Name).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return pods.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return pods.Watch(ctx, o)
		},
	}
	_, err := watchtools.UntilWithSync(ctx, lw, &corev1.Pod{}, nil, func(ev watch.Event) (bool, error) {
		p, ok := ev.Object.(*corev1.Pod)
		if !ok {
			return false, nil
		}
		switch p.Status.Phase {
		case corev1.PodRunning:
			return true, nil
		case corev1.PodFailed, corev1.PodSucceeded:
			return false, fmt.Errorf("the capture pod %s ended (%s) before the capture: %s", p.Name, p.Status.Phase, p.Status.Message)
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the capture pod %s/%s on node %s: %w", r.pod.Namespace, r.pod.Name, r.cfg.Node, err)
	}
	return nil
}

// Describe names the pod.
func (r *PodRunner) Describe() string {
	return fmt.Sprintf("node %s (pod %s/%s)", r.cfg.Node, r.pod.Namespace, r.pod.Name)
}

// Close deletes the pod, even when ctx is already cancelled (Ctrl-C).
func (r *PodRunner) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := r.cfg.Kube.CoreV1().Pods(r.pod.Namespace).Delete(ctx, r.pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	if err != nil {
		return fmt.Errorf("deleting the capture pod %s/%s: %w (delete it by hand; its deadline also ends it)", r.pod.Namespace, r.pod.Name, err)
	}
	return nil
}

func (r *PodRunner) executor(argv []string, stdin bool) (remotecommand.Executor, error) {
	req := r.cfg.Kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(r.pod.Namespace).Name(r.pod.Name).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: "sniff", Command: argv, Stdin: stdin, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(r.cfg.REST, "GET", req.URL().String())
	if err != nil {
		return nil, err
	}
	spdy, err := remotecommand.NewSPDYExecutor(r.cfg.REST, "POST", req.URL())
	if err != nil {
		return nil, err
	}
	return remotecommand.NewFallbackExecutor(ws, spdy, httpstream.IsUpgradeFailure)
}

// Output runs argv in the pod without a TTY.
func (r *PodRunner) Output(ctx context.Context, argv []string) ([]byte, error) {
	ex, err := r.executor(argv, false)
	if err != nil {
		return nil, err
	}
	var out, errOut bytes.Buffer
	if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut}); err != nil {
		return out.Bytes(), fmt.Errorf("running %s in %s: %w: %s", argv[0], r.Describe(), err, strings.TrimSpace(errOut.String()))
	}
	return out.Bytes(), nil
}

// pidFirst runs its arguments after printing the shell's PID, which exec
// hands on to them, as the first line of stderr: Stop signals that PID from
// a second exec.
const pidFirst = `echo "sniff-pid $$" >&2; exec "$@"`

// Stream runs argv in the pod. Stop sends it SIGTERM through a second exec,
// so tcpdump flushes and the stream ends normally; Close cuts the stream
// (for a remote end that does not stop), and deleting the pod ends tcpdump
// for good.
func (r *PodRunner) Stream(ctx context.Context, argv []string) (Stream, error) {
	ex, err := r.executor(append([]string{"sh", "-c", pidFirst, "sniff"}, argv...), false)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	s := &podStream{r: pr, cancel: cancel, done: make(chan struct{}), where: r.Describe(),
		kill: func(ctx context.Context, pid string) error {
			_, err := r.Output(ctx, []string{"kill", "-TERM", pid})
			return err
		}}
	go func() {
		err := ex.StreamWithContext(sctx, remotecommand.StreamOptions{Stdout: pw, Stderr: &s.stderr})
		if sctx.Err() != nil {
			err = nil // cut by us
		}
		s.err = err
		pw.CloseWithError(io.EOF)
		close(s.done)
	}()
	return s, nil
}

type podStream struct {
	r         *io.PipeReader
	cancel    context.CancelFunc
	kill      func(ctx context.Context, pid string) error
	stderr    lockedBuffer
	err       error
	done      chan struct{}
	stopOnce  sync.Once
	closeOnce sync.Once
	where     string
}

func (s *podStream) Read(p []byte) (int, error) { return s.r.Read(p) }

// Stop asks the remote command to end; when that cannot be done (no PID
// seen yet, exec refused) it cuts the stream instead.
func (s *podStream) Stop() {
	s.stopOnce.Do(func() {
		pid, _ := s.pid()
		if pid == "" {
			s.closeOnce.Do(s.cancel)
			return
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			select {
			case <-s.done:
				return
			default:
			}
			if err := s.kill(ctx, pid); err != nil {
				s.closeOnce.Do(s.cancel)
			}
		}()
	})
}

// pid is the remote PID from the first stderr line, and the rest of stderr.
func (s *podStream) pid() (pid, rest string) {
	out := s.stderr.String()
	first, rest, _ := strings.Cut(out, "\n")
	if p, ok := strings.CutPrefix(first, "sniff-pid "); ok {
		return strings.TrimSpace(p), rest
	}
	return "", out
}

func (s *podStream) Wait() error {
	<-s.done
	_, stderr := s.pid()
	return execError(s.err, stderr, s.where)
}

// execError says how an exec stream ended in Capture's terms: the command's
// own exit status when the API server reports one (timeout's 124 is the
// backstop, not a failure), anything else (exec refused, stream broken) as
// the exec failing rather than the command.
func execError(err error, stderr, where string) error {
	if err == nil {
		return nil
	}
	var exit utilexec.ExitError
	if errors.As(err, &exit) && exit.Exited() {
		return &RemoteExitError{Status: exit.ExitStatus(), Stderr: strings.TrimSpace(stderr + "\n" + err.Error())}
	}
	if stderr = strings.TrimSpace(stderr); stderr != "" {
		return fmt.Errorf("exec in %s: %w: %s", where, err, stderr)
	}
	return fmt.Errorf("exec in %s: %w", where, err)
}
func (s *podStream) Close() error {
	s.closeOnce.Do(s.cancel)
	return s.r.Close()
}

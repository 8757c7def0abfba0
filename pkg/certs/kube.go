package certs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
)

// ForbiddenError is a port-forward or exec the user has no RBAC rights for.
type ForbiddenError struct {
	Namespace, Pod string
	Subresource    string // portforward or exec
	Err            error
}

func (e *ForbiddenError) Error() string {
	return fmt.Sprintf("not allowed to %s pod %s/%s: %v; ask for RBAC rights to create pods/%s in namespace %s (check with: kubectl auth can-i create pods/%s -n %s)",
		strings.Replace(e.Subresource, "portforward", "port-forward to", 1), e.Namespace, e.Pod, e.Err, e.Subresource, e.Namespace, e.Subresource, e.Namespace)
}

func (e *ForbiddenError) Unwrap() error { return e.Err }

// UnreachableError is a port-forward that reached the pod but not the port.
type UnreachableError struct {
	Namespace, Pod string
	Port           int
	Err            error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("Envoy admin port %d of pod %s/%s is unreachable: %v; check that istio-proxy is running (kubectl logs %s -n %s -c istio-proxy) and the port (--proxy-admin-port)",
		e.Port, e.Namespace, e.Pod, e.Err, e.Pod, e.Namespace)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// ExecError is a command that ran in the container and failed.
type ExecError struct {
	Command []string
	Stderr  string
	Err     error
}

func (e *ExecError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		msg = e.Err.Error()
	}
	return fmt.Sprintf("%s failed in %s: %s", strings.Join(e.Command, " "), ProxyContainer, msg)
}

func (e *ExecError) Unwrap() error { return e.Err }

// Kube is the real Forwarder and Executor: port-forward and exec through the
// API server, over WebSockets with a fallback to SPDY, as kubectl does.
type Kube struct {
	Config *rest.Config
	Client kubernetes.Interface
	// Timeout bounds one request; zero means 30s.
	Timeout time.Duration
}

var _ Forwarder = (*Kube)(nil)
var _ Executor = (*Kube)(nil)

func (k *Kube) timeout() time.Duration {
	if k.Timeout > 0 {
		return k.Timeout
	}
	return 30 * time.Second
}

// Get sends one HTTP GET through a port-forward stream; no local listener is
// opened, so nothing else on the machine can use the tunnel.
func (k *Kube) Get(ctx context.Context, pod *corev1.Pod, port int, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, k.timeout())
	defer cancel()
	u := k.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("portforward").URL()
	rt, upgrader, err := spdy.RoundTripperFor(k.Config)
	if err != nil {
		return nil, fmt.Errorf("building the port-forward transport: %w", err)
	}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: rt}, http.MethodPost, u)
	if ws, err := portforward.NewSPDYOverWebsocketDialer(u, k.Config); err == nil {
		dialer = portforward.NewFallbackDialer(ws, dialer, func(err error) bool {
			return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
		})
	}
	conn, _, err := dialer.Dial(portforward.PortForwardProtocolV1Name)
	if err != nil {
		return nil, k.classify(ctx, pod, "portforward", fmt.Errorf("port-forward to pod %s/%s failed: %w", pod.Namespace, pod.Name, err))
	}
	defer conn.Close()
	go func() {
		<-ctx.Done()
		conn.Close()
	}()

	headers := http.Header{}
	headers.Set(corev1.StreamType, corev1.StreamTypeError)
	headers.Set(corev1.PortHeader, strconv.Itoa(port))
	headers.Set(corev1.PortForwardRequestIDHeader, "0")
	errStream, err := conn.CreateStream(headers)
	if err != nil {
		return nil, fmt.Errorf("port-forward to pod %s/%s: creating the error stream: %w", pod.Namespace, pod.Name, err)
	}
	// Nothing is sent on the error stream; the kubelet writes to it when it
	// cannot connect to the port.
	errStream.Close()
	remoteErr := make(chan string, 1)
	go func() {
		msg, _ := io.ReadAll(errStream)
		remoteErr <- strings.TrimSpace(string(msg))
	}()
	headers.Set(corev1.StreamType, corev1.StreamTypeData)
	data, err := conn.CreateStream(headers)
	if err != nil {
		return nil, fmt.Errorf("port-forward to pod %s/%s: creating the data stream: %w", pod.Namespace, pod.Name, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://localhost"+path, nil)
	if err != nil {
		return nil, err
	}
	req.Close = true
	body, err := roundTrip(data, req)
	if err != nil {
		// The kubelet's reason (connection refused, ...) beats our EOF.
		select {
		case msg := <-remoteErr:
			if msg != "" {
				err = errors.New(msg)
			}
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (no answer within %s)", err, k.timeout())
		}
		return nil, &UnreachableError{Namespace: pod.Namespace, Pod: pod.Name, Port: port, Err: err}
	}
	return body, nil
}

func roundTrip(conn io.ReadWriter, req *http.Request) ([]byte, error) {
	if err := req.Write(conn); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s answered %s: %s", req.URL.RequestURI(), resp.Status, firstLine(body))
	}
	return body, nil
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// Exec runs command in container and returns its stdout.
func (k *Kube) Exec(ctx context.Context, pod *corev1.Pod, container string, command []string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, k.timeout())
	defer cancel()
	u := k.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: container, Command: command, Stdout: true, Stderr: true}, scheme.ParameterCodec).URL()
	spdyExec, err := remotecommand.NewSPDYExecutor(k.Config, http.MethodPost, u)
	if err != nil {
		return nil, fmt.Errorf("building the exec transport: %w", err)
	}
	var exec remotecommand.Executor = spdyExec
	if ws, err := remotecommand.NewWebSocketExecutor(k.Config, http.MethodGet, u.String()); err == nil {
		if fb, err := remotecommand.NewFallbackExecutor(ws, spdyExec, func(err error) bool {
			return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
		}); err == nil {
			exec = fb
		}
	}
	var stdout, stderr bytes.Buffer
	if err := exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr}); err != nil {
		if apierrors.IsForbidden(err) {
			return nil, &ForbiddenError{Namespace: pod.Namespace, Pod: pod.Name, Subresource: "exec", Err: err}
		}
		if stderr.Len() > 0 {
			return nil, &ExecError{Command: command, Stderr: stderr.String(), Err: err}
		}
		return nil, k.classify(ctx, pod, "exec", &ExecError{Command: command, Err: err})
	}
	return stdout.Bytes(), nil
}

// classify turns an upgrade failure into a ForbiddenError when RBAC is the
// reason. The upgrade error does not always carry the API status (it depends
// on the transport), so the API server is asked directly.
func (k *Kube) classify(ctx context.Context, pod *corev1.Pod, sub string, err error) error {
	if apierrors.IsForbidden(err) {
		return &ForbiddenError{Namespace: pod.Namespace, Pod: pod.Name, Subresource: sub, Err: errors.Unwrap(err)}
	}
	review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: pod.Namespace, Verb: "create", Resource: "pods", Subresource: sub, Name: pod.Name},
	}}
	res, rerr := k.Client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
	if rerr == nil && !res.Status.Allowed {
		return &ForbiddenError{Namespace: pod.Namespace, Pod: pod.Name, Subresource: sub, Err: errors.New("forbidden by RBAC")}
	}
	return err
}

// LazyKube is a Kube built on first use, so commands that never reach a pod
// need no REST config.
type LazyKube struct {
	Config func() (*rest.Config, error)
	Client kubernetes.Interface

	once sync.Once
	k    *Kube
	err  error
}

var _ Forwarder = (*LazyKube)(nil)
var _ Executor = (*LazyKube)(nil)

func (l *LazyKube) get() (*Kube, error) {
	l.once.Do(func() {
		cfg, err := l.Config()
		if err != nil {
			l.err = err
			return
		}
		l.k = &Kube{Config: cfg, Client: l.Client}
	})
	return l.k, l.err
}

// Get is Kube.Get.
func (l *LazyKube) Get(ctx context.Context, pod *corev1.Pod, port int, path string) ([]byte, error) {
	k, err := l.get()
	if err != nil {
		return nil, err
	}
	return k.Get(ctx, pod, port, path)
}

// Exec is Kube.Exec.
func (l *LazyKube) Exec(ctx context.Context, pod *corev1.Pod, container string, command []string) ([]byte, error) {
	k, err := l.get()
	if err != nil {
		return nil, err
	}
	return k.Exec(ctx, pod, container, command)
}

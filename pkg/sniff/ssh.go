package sniff

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Runner runs commands on a node. SSH and `--via pod` implement it; tests
// use a stub.
type Runner interface {
	// Output runs a short read-only command and returns its stdout.
	Output(ctx context.Context, argv []string) ([]byte, error)
	// Stream starts a capture command whose stdout is the pcap stream.
	Stream(ctx context.Context, argv []string) (Stream, error)
	// Describe names where commands run, for messages ("node1 (10.0.0.4)").
	Describe() string
	Close() error
}

// Stream is a running remote capture.
type Stream interface {
	io.Reader
	// Stop asks the remote command to finish (it flushes and exits).
	Stop()
	// Wait waits for the remote command to exit.
	Wait() error
	// Close abandons the command and releases the connection.
	Close() error
}

// SSHConfig says how to reach a node.
type SSHConfig struct {
	// Name is the node's name, for messages.
	Name string
	Host string
	Port int
	User string
	// KnownHosts are the user's known_hosts files (the first is named in
	// hints); GlobalKnownHosts the system's. Host keys are checked against
	// all of them that exist.
	KnownHosts       []string
	GlobalKnownHosts []string
	// InsecureSkipHostKeyCheck accepts any host key.
	InsecureSkipHostKeyCheck bool
	// KeyFiles are private keys offered first, in order (--ssh-key, then
	// ssh_config's IdentityFile); then ssh-agent's keys, unless
	// IdentitiesOnly; then FallbackKeyFiles (~/.ssh/id_*), which are
	// skipped when unreadable.
	KeyFiles         []string
	IdentitiesOnly   bool
	AgentSocket      string
	FallbackKeyFiles []string
	// Jump is an optional bastion to go through.
	Jump *SSHConfig
	// Sudo runs capture commands under `sudo -n`; Auto when the login is not root.
	Sudo *bool
	// DialTimeout bounds the TCP connect and SSH handshake.
	DialTimeout time.Duration
}

// Addr is host:port.
func (c *SSHConfig) Addr() string {
	port := c.Port
	if port == 0 {
		port = 22
	}
	return net.JoinHostPort(c.Host, strconv.Itoa(port))
}

// HostKeyError is an unknown or changed host key; no command was run.
type HostKeyError struct {
	msg string
	err error
}

func (e *HostKeyError) Error() string { return e.msg }
func (e *HostKeyError) Unwrap() error { return e.err }

// SSHRunner runs commands over one SSH connection.
type SSHRunner struct {
	cfg    SSHConfig
	client *ssh.Client
	jump   *ssh.Client
	sudo   bool
}

// DialSSH connects to the node, checking its host key against known_hosts.
func DialSSH(ctx context.Context, cfg SSHConfig) (*SSHRunner, error) {
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 15 * time.Second
	}
	if cfg.User == "" {
		return nil, fmt.Errorf("no SSH user for %s: pass --ssh-user or set User in ~/.ssh/config", cfg.Host)
	}
	r := &SSHRunner{cfg: cfg}
	if cfg.Sudo != nil {
		r.sudo = *cfg.Sudo
	} else {
		r.sudo = cfg.User != "root"
	}
	var conn net.Conn
	var err error
	if cfg.Jump != nil {
		jcfg := *cfg.Jump
		if jcfg.DialTimeout == 0 {
			jcfg.DialTimeout = cfg.DialTimeout
		}
		r.jump, err = dialClient(ctx, &jcfg, nil)
		if err != nil {
			return nil, fmt.Errorf("via jump host %s: %w", jcfg.Addr(), err)
		}
		conn, err = r.jump.DialContext(ctx, "tcp", cfg.Addr())
		if err != nil {
			r.jump.Close()
			return nil, fmt.Errorf("connecting from jump host %s to %s: %w", jcfg.Addr(), cfg.Addr(), err)
		}
	}
	r.client, err = dialClient(ctx, &cfg, conn)
	if err != nil {
		if r.jump != nil {
			r.jump.Close()
		}
		return nil, err
	}
	return r, nil
}

func dialClient(ctx context.Context, cfg *SSHConfig, conn net.Conn) (*ssh.Client, error) {
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 15 * time.Second
	}
	hostKey, algos, err := hostKeyCallback(cfg)
	if err != nil {
		return nil, err
	}
	auth, authDone, err := authMethods(cfg)
	if err != nil {
		return nil, err
	}
	defer authDone()
	cc := &ssh.ClientConfig{
		User:              cfg.User,
		Auth:              auth,
		HostKeyCallback:   hostKey,
		HostKeyAlgorithms: algos,
		Timeout:           cfg.DialTimeout,
	}
	if conn == nil {
		d := net.Dialer{Timeout: cfg.DialTimeout}
		conn, err = d.DialContext(ctx, "tcp", cfg.Addr())
		if err != nil {
			return nil, fmt.Errorf("connecting to %s: %w", cfg.Addr(), err)
		}
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(cfg.DialTimeout))
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, cfg.Addr(), cc)
	if err != nil {
		conn.Close()
		var hk *HostKeyError
		if errors.As(err, &hk) {
			return nil, hk
		}
		return nil, fmt.Errorf("SSH to %s@%s: %w (check --ssh-user, --ssh-key or your ssh-agent)", cfg.User, cfg.Addr(), err)
	}
	conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

// Describe names the node.
func (r *SSHRunner) Describe() string {
	if r.cfg.Name != "" && r.cfg.Name != r.cfg.Host {
		return fmt.Sprintf("%s (%s)", r.cfg.Name, r.cfg.Addr())
	}
	return r.cfg.Addr()
}

// Close closes the connection(s).
func (r *SSHRunner) Close() error {
	err := r.client.Close()
	if r.jump != nil {
		r.jump.Close()
	}
	return err
}

// Output runs argv (quoted, no stop wrapper: it ends by itself).
func (r *SSHRunner) Output(ctx context.Context, argv []string) ([]byte, error) {
	s, err := r.client.NewSession()
	if err != nil {
		return nil, fmt.Errorf("opening an SSH session to %s: %w", r.Describe(), err)
	}
	defer s.Close()
	var stdout, stderr bytes.Buffer
	s.Stdout, s.Stderr = &stdout, &stderr
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = ShellQuote(a)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(strings.Join(quoted, " ")) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	}
	if err != nil {
		return stdout.Bytes(), fmt.Errorf("running %s on %s: %w: %s", argv[0], r.Describe(), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// Stream starts argv under the stop-on-EOF wrapper (and sudo -n). No PTY is
// requested: it would mangle the binary pcap stream.
func (r *SSHRunner) Stream(ctx context.Context, argv []string) (Stream, error) {
	s, err := r.client.NewSession()
	if err != nil {
		return nil, fmt.Errorf("opening an SSH session to %s: %w", r.Describe(), err)
	}
	stdin, err := s.StdinPipe()
	if err != nil {
		s.Close()
		return nil, err
	}
	stdout, err := s.StdoutPipe()
	if err != nil {
		s.Close()
		return nil, err
	}
	st := &sshStream{s: s, stdin: stdin, stdout: stdout, runner: r}
	s.Stderr = &st.stderr
	if err := s.Start(RemoteCommand(argv, r.sudo)); err != nil {
		s.Close()
		return nil, fmt.Errorf("starting the capture on %s: %w", r.Describe(), err)
	}
	return st, nil
}

type sshStream struct {
	s      *ssh.Session
	stdin  io.WriteCloser
	stdout io.Reader
	stderr lockedBuffer
	runner *SSHRunner
	once   sync.Once
}

func (s *sshStream) Read(p []byte) (int, error) { return s.stdout.Read(p) }

func (s *sshStream) Stop() { s.once.Do(func() { s.stdin.Close() }) }

func (s *sshStream) Wait() error {
	err := s.s.Wait()
	if err == nil {
		return nil
	}
	msg := strings.TrimSpace(s.stderr.String())
	var missing *ssh.ExitMissingError
	if errors.As(err, &missing) || errors.Is(err, io.EOF) {
		return &ConnectionLostError{Node: s.runner.Describe(), Err: err}
	}
	var exit *ssh.ExitError
	if errors.As(err, &exit) {
		return &RemoteExitError{Status: exit.ExitStatus(), Stderr: msg}
	}
	return fmt.Errorf("capture on %s: %w", s.runner.Describe(), err)
}

func (s *sshStream) Close() error {
	s.Stop()
	return s.s.Close()
}

// lockedBuffer collects stderr written by the SSH library's goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 64<<10 {
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// ConnectionLostError means the link to the node went away mid-capture.
type ConnectionLostError struct {
	Node string
	Err  error
}

func (e *ConnectionLostError) Error() string {
	return fmt.Sprintf("the connection to %s was lost during the capture: the summary covers only the packets received", e.Node)
}
func (e *ConnectionLostError) Unwrap() error { return e.Err }

// RemoteExitError is the capture command failing on the node.
type RemoteExitError struct {
	Status int
	Stderr string
}

func (e *RemoteExitError) Error() string {
	if strings.Contains(e.Stderr, "sudo") && strings.Contains(e.Stderr, "password") {
		return fmt.Sprintf("sudo on the node asks for a password (exit %d): allow tcpdump without one, e.g. with the sudoers rule `USER ALL=(root) NOPASSWD: /usr/bin/tcpdump` (the path of tcpdump on the node), or log in as root (--ssh-user root)", e.Status)
	}
	if e.Status == 127 && strings.Contains(e.Stderr, "sudo") {
		return fmt.Sprintf("sudo is not installed on the node (exit 127: %s): install it, or log in as root (--ssh-user root)", lastLines(e.Stderr, 1))
	}
	return fmt.Sprintf("the capture command failed on the node (exit %d): %s", e.Status, lastLines(e.Stderr, 3))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}

package netlab

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHD is OpenSSH's sshd running in the node namespace.
type SSHD struct {
	// Addr is host:port to connect to from the host.
	Addr string
	Port int
	User string
	// ClientKey is a private key the server accepts for User.
	ClientKey string
	// Dir holds the server's files (authorized_keys, sshd_config).
	Dir string
	// KnownHosts has the server's real host key; WrongKnownHosts another key
	// for the same address (a "changed" host key).
	KnownHosts      string
	WrongKnownHosts string
	// HostKey is the server's public key.
	HostKey ssh.PublicKey
	// PID is the listening sshd; per-connection sshd processes are others.
	PID int
}

// StartSSHD runs sshd as root in the node namespace, in a private mount
// namespace so its /run/sshd never touches the host's, with a host key,
// authorized key and known_hosts files made for this lab.
func (l *Lab) StartSSHD(ctx context.Context) (*SSHD, error) { return l.StartSSHDFor(ctx, "") }

// StartSSHDFor is StartSSHD accepting clientKey (an OpenSSH private key
// file, "" for a new one): nodes of one cluster take the same login key,
// each with a host key of its own.
func (l *Lab) StartSSHDFor(ctx context.Context, clientKey string) (*SSHD, error) {
	dir := filepath.Join(l.Dir, "ssh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	hostPub, err := writeKey(filepath.Join(dir, "host_ed25519"))
	if err != nil {
		return nil, err
	}
	var clientPub ssh.PublicKey
	if clientKey == "" {
		clientKey = filepath.Join(dir, "client_ed25519")
		clientPub, err = writeKey(clientKey)
	} else {
		clientPub, err = readPublicKey(clientKey)
	}
	if err != nil {
		return nil, err
	}
	wrongPub, err := writeKey(filepath.Join(dir, "other_ed25519"))
	if err != nil {
		return nil, err
	}
	auth := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(auth, ssh.MarshalAuthorizedKey(clientPub), 0o600); err != nil {
		return nil, err
	}
	s := &SSHD{Port: 22, User: "root", ClientKey: clientKey, Dir: dir, HostKey: hostPub,
		KnownHosts: filepath.Join(dir, "known_hosts"), WrongKnownHosts: filepath.Join(dir, "known_hosts.wrong")}
	s.Addr = net.JoinHostPort(l.NodeIP.String(), "22")
	if err := os.WriteFile(s.KnownHosts, []byte(knownhosts.Line([]string{s.Addr}, hostPub)+"\n"), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(s.WrongKnownHosts, []byte(knownhosts.Line([]string{s.Addr}, wrongPub)+"\n"), 0o600); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "sshd_config")
	cfg := strings.Join([]string{
		"ListenAddress " + l.NodeIP.String(),
		"Port 22",
		"HostKey " + filepath.Join(dir, "host_ed25519"),
		"AuthorizedKeysFile " + auth,
		"PidFile none",
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"StrictModes no",
		"PrintMotd no",
		"PrintLastLog no",
		"LogLevel VERBOSE",
		"MaxSessions 20",
		"MaxStartups 50",
	}, "\n") + "\n"
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	script := "mount -t tmpfs tmpfs /run && mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e -f " + conf
	cmd, err := l.Start("sshd", "unshare", "-m", "--propagation", "private", "sh", "-c", script)
	if err != nil {
		return nil, err
	}
	// ip netns exec, unshare and sh all exec: the PID ends up being sshd's.
	s.PID = cmd.Process.Pid
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			return s, nil
		}
		select {
		case <-wctx.Done():
			return nil, fmt.Errorf("sshd did not start: %v\n%s", err, l.Log("sshd"))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// writeKey creates an ed25519 key pair, the private half in OpenSSH format.
func writeKey(path string) (ssh.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return sp, os.WriteFile(path+".pub", ssh.MarshalAuthorizedKey(sp), 0o644)
}

// readPublicKey reads the public half of an OpenSSH private key file.
func readPublicKey(path string) (ssh.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("reading the client key %s: %w", path, err)
	}
	return signer.PublicKey(), nil
}

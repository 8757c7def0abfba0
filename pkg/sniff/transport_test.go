package sniff

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
)

func writeFile(t *testing.T, path, text string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Include pulls Host blocks from other files, and a block found there
// counts as ssh_config knowing the node.
func TestSSHConfigInclude(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "conf.d", "lab.conf"), "Host node1\n  HostName 10.0.0.4\n  User core\n  IdentityFile ~/.ssh/lab\n  IdentitiesOnly yes\n")
	writeFile(t, filepath.Join(dir, "conf.d", "other.conf"), "Host node7\n  Port 2207\n")
	main := writeFile(t, filepath.Join(dir, "config"), "Include "+filepath.Join(dir, "conf.d", "*.conf")+"\nHost *\n  User everyone\n  Port 22\n")
	files, err := LoadSSHConfig("/home/u", "me", []string{main})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host string
		want string
	}{
		{"node1", "hostname=10.0.0.4 user=core port=22 ids=[/home/u/.ssh/lab] only=true matched=true"},
		{"node7", "hostname= user=everyone port=2207 ids=[] only=false matched=true"},
		{"node2", "hostname= user=everyone port=22 ids=[] only=false matched=false"},
	}
	for _, tt := range tests {
		h, err := files.Host(tt.host)
		if err != nil {
			t.Fatal(err)
		}
		got := fmt.Sprintf("hostname=%s user=%s port=%d ids=%v only=%v matched=%v", h.HostName, h.User, h.Port, h.IdentityFiles, h.IdentitiesOnly, h.Matched)
		if got != tt.want {
			t.Errorf("%s: got  %s\nwant %s", tt.host, got, tt.want)
		}
	}
}

func sshSummary(c SSHConfig) string {
	s := fmt.Sprintf("%s@%s keys=%v fallback=%v only=%v known=%v global=%v", c.User, c.Addr(), c.KeyFiles, c.FallbackKeyFiles, c.IdentitiesOnly, c.KnownHosts, c.GlobalKnownHosts)
	if c.Jump != nil {
		s += " jump=" + c.Jump.User + "@" + c.Jump.Addr()
	}
	return s
}

// Flags win over ssh_config, ssh_config over the Node object and defaults;
// the user's file is read before the system's; --via auto needs settings.
func TestResolveSSH(t *testing.T) {
	home := t.TempDir()
	key := writeFile(t, filepath.Join(home, ".ssh", "lab_key"), "k")
	writeFile(t, filepath.Join(home, ".ssh", "id_ed25519"), "k")
	user := `Host node1
  HostName 192.0.2.10
  User core
  IdentityFile ~/.ssh/lab_key
  IdentityFile ~/.ssh/missing_key
  ProxyJump admin@bastion:2222
Host 10.0.0.5
  User byaddr
  IdentitiesOnly yes
  UserKnownHostsFile ~/.ssh/cluster_hosts
  GlobalKnownHostsFile /etc/cluster_hosts
Host bastion
  HostName 192.0.2.1
`
	writeFile(t, filepath.Join(home, ".ssh", "config"), user)
	system := writeFile(t, filepath.Join(home, "etc_ssh_config"), "Host node1 node2\n  Port 2200\n  User sysuser\n")
	kube := fake.NewClientset(
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.4"}}}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node3"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: "n3"}, {Type: corev1.NodeInternalIP, Address: "10.0.0.5"}}}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node4"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.6"}}}},
	)
	env := SSHEnv{Home: home, LocalUser: "me", AgentSocket: "/run/agent.sock", SystemConfig: system, GlobalKnownHosts: []string{"/etc/ssh/ssh_known_hosts"}}
	kh := filepath.Join(home, ".ssh", "known_hosts") + " " + filepath.Join(home, ".ssh", "known_hosts2")
	tests := []struct {
		name string
		via  string
		node string
		ssh  SSHSettings
		want string
	}{
		{name: "ssh_config by name, system file for the rest", node: "node1",
			want: "core@192.0.2.10:2200 keys=[" + key + "] fallback=[] only=false known=[" + kh + "] global=[/etc/ssh/ssh_known_hosts] jump=admin@192.0.2.1:2222"},
		{name: "flags first", node: "node1", ssh: SSHSettings{Address: "10.9.9.9", User: "root", Port: 22, KeyFiles: []string{"/k/a"}, KnownHosts: []string{"/k/known"}, Jump: "ops@192.0.2.99"},
			want: "root@10.9.9.9:22 keys=[/k/a " + key + "] fallback=[] only=false known=[/k/known] global=[/etc/ssh/ssh_known_hosts] jump=ops@192.0.2.99:22"},
		{name: "ssh_config by the node's address", node: "node3",
			want: "byaddr@10.0.0.5:22 keys=[] fallback=[" + filepath.Join(home, ".ssh", "id_ed25519") + "] only=true known=[" + filepath.Join(home, ".ssh", "cluster_hosts") + "] global=[/etc/cluster_hosts]"},
		{name: "via ssh with nothing configured", via: ViaSSH, node: "node4",
			want: "me@10.0.0.6:22 keys=[] fallback=[" + filepath.Join(home, ".ssh", "id_ed25519") + "] only=false known=[" + kh + "] global=[/etc/ssh/ssh_known_hosts]"},
		{name: "a flag alone is enough for auto", node: "node4", ssh: SSHSettings{User: "admin"},
			want: "admin@10.0.0.6:22 keys=[] fallback=[" + filepath.Join(home, ".ssh", "id_ed25519") + "] only=false known=[" + kh + "] global=[/etc/ssh/ssh_known_hosts]"},
		{name: "--ssh-config replaces both files", node: "node4", ssh: SSHSettings{ConfigFile: system, User: "x"},
			want: "x@10.0.0.6:22 keys=[] fallback=[" + filepath.Join(home, ".ssh", "id_ed25519") + "] only=false known=[" + kh + "] global=[/etc/ssh/ssh_known_hosts]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := TransportConfig{Via: tt.via, SSH: tt.ssh, Env: env, Kube: kube, Namespace: "shop", Image: "img:1"}
			got, err := ResolveSSH(context.Background(), cfg, tt.node)
			if err != nil {
				t.Fatal(err)
			}
			if s := sshSummary(got); s != tt.want {
				t.Errorf("got  %s\nwant %s", s, tt.want)
			}
		})
	}
}

// --via auto with nothing configured stops and says what --via pod would
// create; nothing is created.
func TestOpenRunnerAutoWithoutSSH(t *testing.T) {
	home := t.TempDir()
	kube := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node4"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.6"}}}})
	cfg := TransportConfig{Via: ViaAuto, Env: SSHEnv{Home: home, LocalUser: "me"}, Kube: kube, Namespace: "shop",
		REST: func() (*rest.Config, error) { t.Fatal("asked for a REST config"); return nil, nil }}
	want := `no SSH settings for node node4: no --ssh-* flag is given and ssh_config (~/.ssh/config, /etc/ssh/ssh_config) has no Host entry for node node4 or its address 10.0.0.6.
Set up SSH: pass --ssh-user (with --ssh-key, --node-address or --ssh-jump as needed), or add "Host node4" with User and IdentityFile to ~/.ssh/config; the user must be root or may run "sudo -n tcpdump".
Or pass --via pod: it creates a pod on node node4 in namespace shop with hostNetwork, capabilities NET_RAW and NET_ADMIN and image ` + DefaultImage + `, runs tcpdump in it and deletes it afterwards`
	_, err := OpenRunner(context.Background(), cfg, "node4")
	if err == nil || err.Error() != want {
		t.Fatalf("error:\n%v\nwant:\n%s", err, want)
	}
	// Nodes may be hidden from a namespace's user: the same answer.
	_, err = OpenRunner(context.Background(), cfg, "node9")
	if err == nil || !strings.HasPrefix(err.Error(), "no SSH settings for node node9: no --ssh-* flag is given and ssh_config (~/.ssh/config, /etc/ssh/ssh_config) has no Host entry for node node9.\n") {
		t.Fatalf("error: %v", err)
	}
	for _, a := range kube.Actions() {
		if a.GetVerb() != "get" || a.GetResource().Resource != "nodes" {
			t.Errorf("unexpected API call %s %s", a.GetVerb(), a.GetResource().Resource)
		}
	}
}

func newKey(t *testing.T) (ed25519.PrivateKey, ssh.Signer) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return priv, s
}

func writeKeyFile(t *testing.T, dir, name string, priv ed25519.PrivateKey, passphrase string) string {
	t.Helper()
	var block *pem.Block
	var err error
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(priv, "")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, filepath.Join(dir, name), string(pem.EncodeToMemory(block)))
}

// testServer is an SSH server on 127.0.0.1 that records the keys a client
// offers and accepts one of them.
type testServer struct {
	addr    string
	hostKey ssh.Signer
	mu      sync.Mutex
	offered []string
}

func startTestServer(t *testing.T, names map[string]string, accept string) *testServer {
	t.Helper()
	_, hk := newKey(t)
	s := &testServer{hostKey: hk}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
		name := names[ssh.FingerprintSHA256(key)]
		s.mu.Lock()
		s.offered = append(s.offered, name)
		s.mu.Unlock()
		if name == accept {
			return &ssh.Permissions{}, nil
		}
		return nil, errors.New("no")
	}}
	cfg.AddHostKey(hk)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	s.addr = l.Addr().String()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc, chans, reqs, err := ssh.NewServerConn(c, cfg)
				if err != nil {
					return
				}
				go ssh.DiscardRequests(reqs)
				for ch := range chans {
					ch.Reject(ssh.Prohibited, "no")
				}
				sc.Close()
			}()
		}
	}()
	return s
}

func (s *testServer) keysOffered() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.offered, " ")
}

// Keys are offered in order: key files (--ssh-key, IdentityFile), then the
// agent's (not with IdentitiesOnly), then ~/.ssh/id_*; a key file with a
// passphrase is used through the agent that holds it.
func TestKeyOrder(t *testing.T) {
	dir := t.TempDir()
	names := map[string]string{}
	keys := map[string]ed25519.PrivateKey{}
	signers := map[string]ssh.Signer{}
	for _, n := range []string{"flag", "config", "agent", "fallback", "locked"} {
		priv, s := newKey(t)
		keys[n], signers[n] = priv, s
		names[ssh.FingerprintSHA256(s.PublicKey())] = n
	}
	flag := writeKeyFile(t, dir, "flag", keys["flag"], "")
	config := writeKeyFile(t, dir, "config", keys["config"], "")
	fallback := writeKeyFile(t, dir, "fallback", keys["fallback"], "")
	locked := writeKeyFile(t, dir, "locked", keys["locked"], "secret")

	sockDir, err := os.MkdirTemp("", "agent")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "s")
	al, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer al.Close()
	ring := agent.NewKeyring()
	for _, n := range []string{"agent", "flag", "locked"} {
		if err := ring.Add(agent.AddedKey{PrivateKey: keys[n]}); err != nil {
			t.Fatal(err)
		}
	}
	go func() {
		for {
			c, err := al.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); agent.ServeAgent(ring, c) }()
		}
	}()

	tests := []struct {
		name     string
		cfg      SSHConfig
		accept   string
		offered  string
		wantFail bool
	}{
		{name: "flags, config, agent, fallback", cfg: SSHConfig{KeyFiles: []string{flag, config}, AgentSocket: sock, FallbackKeyFiles: []string{fallback}},
			accept: "fallback", offered: "flag config agent locked fallback"},
		{name: "IdentitiesOnly leaves the agent's keys out", cfg: SSHConfig{KeyFiles: []string{flag}, IdentitiesOnly: true, AgentSocket: sock, FallbackKeyFiles: []string{fallback}},
			accept: "agent", offered: "flag fallback", wantFail: true},
		{name: "a locked key file through the agent, IdentitiesOnly", cfg: SSHConfig{KeyFiles: []string{locked}, IdentitiesOnly: true, AgentSocket: sock},
			accept: "locked", offered: "locked"},
		{name: "no agent", cfg: SSHConfig{KeyFiles: []string{config}, FallbackKeyFiles: []string{fallback}},
			accept: "fallback", offered: "config fallback"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startTestServer(t, names, tt.accept)
			host, port, _ := net.SplitHostPort(srv.addr)
			cfg := tt.cfg
			cfg.Host, cfg.User, cfg.InsecureSkipHostKeyCheck = host, "u", true
			fmt.Sscan(port, &cfg.Port)
			c, err := dialClient(context.Background(), &cfg, nil)
			if c != nil {
				c.Close()
			}
			if (err != nil) != tt.wantFail {
				t.Fatalf("dial: %v, want failure %v", err, tt.wantFail)
			}
			if got := srv.keysOffered(); got != tt.offered {
				t.Errorf("offered %q, want %q", got, tt.offered)
			}
		})
	}
	if _, _, err := authMethods(&SSHConfig{Host: "h", KeyFiles: []string{locked}}); err == nil ||
		err.Error() != "SSH key "+locked+" is protected by a passphrase: load it into ssh-agent (ssh-add "+locked+") instead" {
		t.Errorf("locked key without agent: %v", err)
	}
}

// Host keys are checked against the user's known_hosts and the system's
// (/etc/ssh/ssh_known_hosts): a key known only system-wide is accepted, a
// different one there is a changed key.
func TestGlobalKnownHosts(t *testing.T) {
	priv, s := newKey(t)
	dir := t.TempDir()
	names := map[string]string{ssh.FingerprintSHA256(s.PublicKey()): "k"}
	srv := startTestServer(t, names, "k")
	key := writeKeyFile(t, dir, "k", priv, "")
	host, port, _ := net.SplitHostPort(srv.addr)
	_, other := newKey(t)
	global := writeFile(t, filepath.Join(dir, "ssh_known_hosts"), knownhosts.Line([]string{srv.addr}, srv.hostKey.PublicKey())+"\n")
	wrong := writeFile(t, filepath.Join(dir, "wrong_known_hosts"), knownhosts.Line([]string{srv.addr}, other.PublicKey())+"\n")
	user := filepath.Join(dir, "no_such_known_hosts")
	base := SSHConfig{Host: host, User: "u", KeyFiles: []string{key}, KnownHosts: []string{user}}
	fmt.Sscan(port, &base.Port)

	cfg := base
	cfg.GlobalKnownHosts = []string{global}
	c, err := dialClient(context.Background(), &cfg, nil)
	if err != nil {
		t.Fatalf("key known system-wide: %v", err)
	}
	c.Close()

	cfg.GlobalKnownHosts = []string{wrong}
	_, err = dialClient(context.Background(), &cfg, nil)
	var hk *HostKeyError
	if !errors.As(err, &hk) || !strings.Contains(err.Error(), "has CHANGED") || !strings.Contains(err.Error(), wrong+":1") {
		t.Errorf("changed key system-wide: %v", err)
	}

	cfg.GlobalKnownHosts = []string{filepath.Join(dir, "none")}
	_, err = dialClient(context.Background(), &cfg, nil)
	want := fmt.Sprintf("cannot check the host key of %s: no known_hosts file (%s, %s); add the node's key with `ssh-keyscan -p %s %s >> %s` after verifying it, or pass --insecure-skip-host-key-check",
		host, user, filepath.Join(dir, "none"), port, host, user)
	if err == nil || err.Error() != want {
		t.Errorf("no file:\n%v\nwant\n%s", err, want)
	}
}

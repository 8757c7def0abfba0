package sniff

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// hostKeyCallback checks the server's key against the user's and the
// system's known_hosts files and returns the key algorithms known for the
// host, so the server presents a key of a type we can check rather than
// one we would wrongly call changed.
func hostKeyCallback(cfg *SSHConfig) (ssh.HostKeyCallback, []string, error) {
	if cfg.InsecureSkipHostKeyCheck {
		return ssh.InsecureIgnoreHostKey(), nil, nil
	}
	var files []string
	for _, f := range append(append([]string(nil), cfg.KnownHosts...), cfg.GlobalKnownHosts...) {
		if _, err := os.Stat(f); err == nil && !contains(files, f) {
			files = append(files, f)
		}
	}
	hint := "~/.ssh/known_hosts"
	if len(cfg.KnownHosts) > 0 {
		hint = cfg.KnownHosts[0]
	}
	if len(files) == 0 {
		tried := append(append([]string(nil), cfg.KnownHosts...), cfg.GlobalKnownHosts...)
		return nil, nil, &HostKeyError{msg: fmt.Sprintf("cannot check the host key of %s: no known_hosts file (%s); add the node's key with `ssh-keyscan -p %d %s >> %s` after verifying it, or pass --insecure-skip-host-key-check", nodeName(cfg), strings.Join(tried, ", "), portOr22(cfg.Port), cfg.Host, hint)}
	}
	cb, err := knownhosts.New(files...)
	if err != nil {
		return nil, nil, fmt.Errorf("reading known_hosts %s: %w", strings.Join(files, ", "), err)
	}
	algos := knownAlgorithms(cb, cfg.Addr())
	check := func(host string, remote net.Addr, key ssh.PublicKey) error {
		err := cb(host, remote, key)
		var ke *knownhosts.KeyError
		var re *knownhosts.RevokedError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &re):
			return &HostKeyError{err: err, msg: fmt.Sprintf("the host key of %s (%s) is revoked in %s: refusing to connect", nodeName(cfg), cfg.Addr(), re.Revoked.Filename)}
		case errors.As(err, &ke) && len(ke.Want) == 0:
			return &HostKeyError{err: err, msg: fmt.Sprintf("the host key of %s (%s) is not in %s: verify its fingerprint %s and add it (`ssh-keyscan -p %d %s >> %s`), or pass --insecure-skip-host-key-check", nodeName(cfg), cfg.Addr(), strings.Join(files, ", "), ssh.FingerprintSHA256(key), portOr22(cfg.Port), cfg.Host, hint)}
		case errors.As(err, &ke):
			w := ke.Want[0]
			return &HostKeyError{err: err, msg: fmt.Sprintf("the host key of %s (%s) has CHANGED: it is %s but %s:%d says otherwise; someone may be intercepting the connection. Nothing was run. If the node was reinstalled, remove the old key with `ssh-keygen -R %s -f %s` and add the new one", nodeName(cfg), cfg.Addr(), ssh.FingerprintSHA256(key), w.Filename, w.Line, knownhosts.Normalize(cfg.Addr()), w.Filename)}
		}
		return &HostKeyError{err: err, msg: fmt.Sprintf("checking the host key of %s: %v", nodeName(cfg), err)}
	}
	return check, algos, nil
}

func nodeName(cfg *SSHConfig) string {
	if cfg.Name != "" && cfg.Name != cfg.Host {
		return "node " + cfg.Name
	}
	return cfg.Host
}

func portOr22(p int) int {
	if p == 0 {
		return 22
	}
	return p
}

// knownAlgorithms lists the host key algorithms known_hosts has for addr,
// found by asking the callback about a key it cannot know.
func knownAlgorithms(cb ssh.HostKeyCallback, addr string) []string {
	pub, _, _ := ed25519.GenerateKey(nil)
	probe, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil
	}
	tcp, _ := net.ResolveTCPAddr("tcp", addr)
	if tcp == nil {
		tcp = &net.TCPAddr{}
	}
	var ke *knownhosts.KeyError
	if !errors.As(cb(addr, tcp, probe), &ke) || len(ke.Want) == 0 {
		return nil
	}
	var algos []string
	seen := map[string]bool{}
	for _, k := range ke.Want {
		t := k.Key.Type()
		names := []string{t}
		if t == ssh.KeyAlgoRSA {
			names = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
		}
		for _, n := range names {
			if !seen[n] {
				seen[n] = true
				algos = append(algos, n)
			}
		}
	}
	return algos
}

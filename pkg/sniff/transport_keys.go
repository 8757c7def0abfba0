package sniff

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// authMethods offers, through one public-key method, the keys of
// cfg.KeyFiles in order, then ssh-agent's (unless IdentitiesOnly), then
// the fallback key files. The agent is asked only when the server wants
// keys; done closes the agent connection after the handshake.
func authMethods(cfg *SSHConfig) (methods []ssh.AuthMethod, done func(), err error) {
	ks := &keySource{cfg: cfg}
	// Key files named explicitly are read now, so a wrong path or a
	// passphrase fails before anything is dialled.
	for _, f := range cfg.KeyFiles {
		s, err := ks.loadKey(f)
		if err != nil {
			ks.close()
			return nil, nil, err
		}
		ks.files = append(ks.files, s)
	}
	if len(ks.files) == 0 && len(cfg.FallbackKeyFiles) == 0 && (cfg.AgentSocket == "" || cfg.IdentitiesOnly) {
		ks.close()
		return nil, nil, fmt.Errorf("no SSH credentials for %s: start ssh-agent with your key loaded, or pass --ssh-key", cfg.Addr())
	}
	return []ssh.AuthMethod{ssh.PublicKeysCallback(ks.signers)}, ks.close, nil
}

type keySource struct {
	cfg       *SSHConfig
	files     []ssh.Signer
	conn      net.Conn
	agent     []ssh.Signer
	agentRead bool
	result    []ssh.Signer
}

func (k *keySource) close() {
	if k.conn != nil {
		k.conn.Close()
	}
}

// agentSigners are ssh-agent's keys (none when no agent answers).
func (k *keySource) agentSigners() []ssh.Signer {
	if k.agentRead || k.cfg.AgentSocket == "" {
		return k.agent
	}
	k.agentRead = true
	conn, err := net.Dial("unix", k.cfg.AgentSocket)
	if err != nil {
		return nil
	}
	s, err := agent.NewClient(conn).Signers()
	if err != nil {
		conn.Close()
		return nil
	}
	k.conn, k.agent = conn, s
	return s
}

// signers lists the keys to offer, without duplicates.
func (k *keySource) signers() ([]ssh.Signer, error) {
	if k.result != nil {
		return k.result, nil
	}
	var out []ssh.Signer
	seen := map[string]bool{}
	add := func(s ssh.Signer) {
		if key := string(s.PublicKey().Marshal()); !seen[key] {
			seen[key] = true
			out = append(out, s)
		}
	}
	for _, s := range k.files {
		add(s)
	}
	if !k.cfg.IdentitiesOnly {
		for _, s := range k.agentSigners() {
			add(s)
		}
	}
	for _, f := range k.cfg.FallbackKeyFiles {
		if s, err := k.loadKey(f); err == nil {
			add(s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no SSH credentials for %s: start ssh-agent with your key loaded, or pass --ssh-key", k.cfg.Addr())
	}
	k.result = out
	return out, nil
}

// loadKey reads a private key file; one protected by a passphrase is used
// through ssh-agent when the agent holds it (as ssh does, IdentitiesOnly
// or not).
func (k *keySource) loadKey(f string) (ssh.Signer, error) {
	b, err := os.ReadFile(f)
	if err != nil {
		return nil, fmt.Errorf("reading SSH key: %w", err)
	}
	s, err := ssh.ParsePrivateKey(b)
	var pp *ssh.PassphraseMissingError
	if errors.As(err, &pp) {
		pub := pp.PublicKey
		if pub == nil {
			if pb, err := os.ReadFile(f + ".pub"); err == nil {
				pub, _, _, _, _ = ssh.ParseAuthorizedKey(pb)
			}
		}
		if pub != nil {
			for _, as := range k.agentSigners() {
				if bytes.Equal(as.PublicKey().Marshal(), pub.Marshal()) {
					return as, nil
				}
			}
		}
		return nil, fmt.Errorf("SSH key %s is protected by a passphrase: load it into ssh-agent (ssh-add %s) instead", f, f)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing SSH key %s: %w", f, err)
	}
	return s, nil
}

// DefaultKeyFiles are the usual private keys in ~/.ssh that exist.
func DefaultKeyFiles(home string) []string {
	var out []string
	for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
		p := filepath.Join(home, ".ssh", n)
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}

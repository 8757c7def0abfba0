package sniff

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kevinburke/ssh_config"
)

// SSHHostConfig is what ssh_config says about one host alias. Only the
// options that matter for reaching a node are read.
type SSHHostConfig struct {
	HostName       string
	User           string
	Port           int
	IdentityFiles  []string
	IdentitiesOnly bool
	ProxyJump      string
	// KnownHostsFile is UserKnownHostsFile; GlobalKnownHostsFile the
	// system-wide files. Both are nil when the config does not set them.
	KnownHostsFile       []string
	GlobalKnownHostsFile []string
	// Matched is set when a Host or Match block other than `Host *` matched.
	Matched bool
}

// SSHConfigFiles are parsed ssh_config files, read in order as ssh(1) reads
// ~/.ssh/config and then /etc/ssh/ssh_config: for each option the first
// value wins, IdentityFile values add up. Include is followed; Match
// supports `host` and `all` (the parser refuses `exec`).
type SSHConfigFiles struct {
	files []sshConfigFile
	// Home expands ~ and %d; LocalUser is %u.
	Home      string
	LocalUser string
}

type sshConfigFile struct {
	path string
	cfg  *ssh_config.Config
}

// LoadSSHConfig parses the files that exist among paths; required ones must.
func LoadSSHConfig(home, localUser string, required []string, optional ...string) (*SSHConfigFiles, error) {
	c := &SSHConfigFiles{Home: home, LocalUser: localUser}
	add := func(p string, must bool) error {
		b, err := os.ReadFile(p)
		if err != nil {
			if !must && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("reading ssh_config %s: %w", p, err)
		}
		cfg, err := ssh_config.DecodeBytes(b)
		if err != nil {
			return fmt.Errorf("ssh_config %s: %w: fix it, or pass --ssh-config with another file (/dev/null for none)", p, err)
		}
		c.files = append(c.files, sshConfigFile{path: p, cfg: cfg})
		return nil
	}
	for _, p := range required {
		if err := add(p, true); err != nil {
			return nil, err
		}
	}
	for _, p := range optional {
		if err := add(p, false); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// ParseSSHConfig returns the settings for host from one ssh_config text.
func ParseSSHConfig(text, host, home string) (SSHHostConfig, error) {
	cfg, err := ssh_config.DecodeBytes([]byte(text))
	if err != nil {
		return SSHHostConfig{}, err
	}
	c := &SSHConfigFiles{Home: home, files: []sshConfigFile{{path: "-", cfg: cfg}}}
	return c.Host(host)
}

// Host returns what the files say about alias.
func (c *SSHConfigFiles) Host(alias string) (SSHHostConfig, error) {
	var h SSHHostConfig
	if c == nil {
		return h, nil
	}
	get := func(key string) string {
		for _, f := range c.files {
			if v, _ := f.cfg.Get(alias, key); v != "" {
				return v
			}
		}
		return ""
	}
	h.HostName = c.expand(get("HostName"), alias, "")
	h.User = get("User")
	if p := get("Port"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return h, fmt.Errorf("ssh_config: Port %q for %s is not a port number", p, alias)
		}
		h.Port = n
	}
	host := h.HostName
	if host == "" {
		host = alias
	}
	for _, f := range c.files {
		ids, _ := f.cfg.GetAll(alias, "IdentityFile")
		for _, id := range ids {
			if id != "none" {
				h.IdentityFiles = append(h.IdentityFiles, c.expand(id, host, h.User))
			}
		}
	}
	h.IdentitiesOnly = strings.EqualFold(get("IdentitiesOnly"), "yes")
	if j := get("ProxyJump"); j != "none" {
		h.ProxyJump = j
	}
	for _, f := range strings.Fields(get("UserKnownHostsFile")) {
		h.KnownHostsFile = append(h.KnownHostsFile, c.expand(f, host, h.User))
	}
	for _, f := range strings.Fields(get("GlobalKnownHostsFile")) {
		h.GlobalKnownHostsFile = append(h.GlobalKnownHostsFile, c.expand(f, host, h.User))
	}
	for _, f := range c.files {
		if c.matchesSpecific(f.cfg, f.path, alias, 0) {
			h.Matched = true
		}
	}
	return h, nil
}

// expand replaces ~ and the tokens ssh_config allows in paths and HostName.
func (c *SSHConfigFiles) expand(s, host, remoteUser string) string {
	if s == "~" || strings.HasPrefix(s, "~/") {
		s = c.Home + s[1:]
	}
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case 'h':
			b.WriteString(host)
		case 'd':
			b.WriteString(c.Home)
		case 'u':
			b.WriteString(c.LocalUser)
		case 'r':
			b.WriteString(remoteUser)
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// matchesSpecific reports whether a block naming alias (not just `*`)
// matches it, in cfg or a file it includes.
func (c *SSHConfigFiles) matchesSpecific(cfg *ssh_config.Config, path, alias string, depth int) bool {
	if depth > 5 {
		return false
	}
	for _, h := range cfg.Hosts {
		if !h.Matches(alias) {
			continue
		}
		for _, p := range h.Patterns {
			if s := p.String(); s != "*" && !strings.HasPrefix(s, "!") &&
				(&ssh_config.Host{Patterns: []*ssh_config.Pattern{p}}).Matches(alias) {
				return true
			}
		}
		for _, n := range h.Nodes {
			inc, ok := n.(*ssh_config.Include)
			if !ok {
				continue
			}
			for _, p := range c.includePaths(inc, path) {
				b, err := os.ReadFile(p)
				if err != nil {
					continue
				}
				if sub, err := ssh_config.DecodeBytes(b); err == nil && c.matchesSpecific(sub, p, alias, depth+1) {
					return true
				}
			}
		}
	}
	return false
}

// includePaths resolves an Include directive as the parser does: relative
// to ~/.ssh, or to /etc/ssh inside the system's files.
func (c *SSHConfigFiles) includePaths(inc *ssh_config.Include, from string) []string {
	line, _, _ := strings.Cut(strings.TrimSpace(inc.String()), "#")
	fields := strings.Fields(strings.TrimLeft(line[len("Include"):], " \t="))
	var out []string
	for _, d := range fields {
		p := d
		switch {
		case filepath.IsAbs(d):
		case strings.HasPrefix(filepath.Clean(from), "/etc/ssh"):
			p = filepath.Join("/etc/ssh", d)
		case strings.HasPrefix(d, "~/"):
			p = filepath.Join(c.Home, d[2:])
		default:
			p = filepath.Join(c.Home, ".ssh", d)
		}
		m, _ := filepath.Glob(p)
		out = append(out, m...)
	}
	return out
}

// ParseUserHostPort splits [user@]host[:port] (as --ssh-jump and ProxyJump take).
func ParseUserHostPort(s string) (user, host string, port int) {
	if i := strings.LastIndex(s, "@"); i >= 0 {
		user, s = s[:i], s[i+1:]
	}
	host = s
	if strings.HasPrefix(s, "[") {
		if j := strings.Index(s, "]"); j > 0 {
			host = s[1:j]
			if rest := s[j+1:]; strings.HasPrefix(rest, ":") {
				port, _ = strconv.Atoi(rest[1:])
			}
		}
		return user, host, port
	}
	if i := strings.LastIndex(s, ":"); i >= 0 && strings.Count(s, ":") == 1 {
		host = s[:i]
		port, _ = strconv.Atoi(s[i+1:])
	}
	return user, host, port
}

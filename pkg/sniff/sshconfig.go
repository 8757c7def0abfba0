package sniff

import (
	"bufio"
	"io"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// SSHHostConfig is what ~/.ssh/config says about one host alias. Only the
// options that matter for reaching a node are read.
type SSHHostConfig struct {
	HostName       string
	User           string
	Port           int
	IdentityFiles  []string
	ProxyJump      string
	KnownHostsFile []string
	// Matched is set when a Host block other than `Host *` matched.
	Matched bool
}

// ParseSSHConfig returns the settings for host from an ssh_config stream:
// for each option the first value from a matching Host block wins, as in
// ssh(1). Match blocks and Include are not supported and are skipped.
func ParseSSHConfig(r io.Reader, host, home string) (SSHHostConfig, error) {
	var c SSHHostConfig
	active := true // options before the first Host apply to all hosts
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := splitOption(line)
		if !ok {
			continue
		}
		switch strings.ToLower(key) {
		case "host":
			active = hostMatches(strings.Fields(val), host)
			if active && val != "*" {
				c.Matched = true
			}
			continue
		case "match":
			active = false
			continue
		}
		if !active {
			continue
		}
		switch strings.ToLower(key) {
		case "hostname":
			if c.HostName == "" {
				c.HostName = strings.ReplaceAll(val, "%h", host)
			}
		case "user":
			if c.User == "" {
				c.User = val
			}
		case "port":
			if c.Port == 0 {
				c.Port, _ = strconv.Atoi(val)
			}
		case "identityfile":
			c.IdentityFiles = append(c.IdentityFiles, expandHome(val, home))
		case "proxyjump":
			if c.ProxyJump == "" && val != "none" {
				c.ProxyJump = val
			}
		case "userknownhostsfile":
			if c.KnownHostsFile == nil {
				for _, f := range strings.Fields(val) {
					c.KnownHostsFile = append(c.KnownHostsFile, expandHome(f, home))
				}
			}
		}
	}
	return c, sc.Err()
}

func splitOption(line string) (string, string, bool) {
	i := strings.IndexAny(line, " \t=")
	if i < 0 {
		return "", "", false
	}
	key := line[:i]
	val := strings.TrimLeft(line[i:], " \t=")
	return key, strings.Trim(strings.TrimSpace(val), `"`), true
}

// hostMatches applies ssh_config Host patterns (*, ?, negation with !).
func hostMatches(patterns []string, host string) bool {
	matched := false
	for _, p := range patterns {
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(p, "!")
		if ok, _ := path.Match(p, host); ok {
			if neg {
				return false
			}
			matched = true
		}
	}
	return matched
}

func expandHome(p, home string) string {
	if p == "~" {
		return home
	}
	if strings.HasPrefix(p, "~/") {
		return filepath.Join(home, p[2:])
	}
	return strings.ReplaceAll(p, "%d", home)
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

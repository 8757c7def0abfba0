package podnet

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// CaptureUser is the node's non-root SSH login. Its sudoers rule allows
// tcpdump alone, without a password, as on a hardened node: `kubectl mesh
// sniff --ssh-user meshcap` must capture with nothing more.
const CaptureUser = "meshcap"

// captureSudoers is Debian's default sudoers with the rule for tcpdump.
const captureSudoers = `Defaults	env_reset
Defaults	mail_badpass
Defaults	secure_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
Defaults	use_pty
root	ALL=(ALL:ALL) ALL
%s	ALL=(root) NOPASSWD: %s
`

// AddCaptureUser adds CaptureUser to the sshd with PID sshdPID (netlab's,
// whose keys are in sshDir) without touching the host: passwd, group,
// shadow and sudoers are bound over /etc in sshd's private mount namespace
// only, so its sessions (and sudo in them) see the user and the rule. The
// user logs in with the same client key as root; sshd reads authorized
// keys as the user, so sshDir and its parents up to the temporary
// directory become traversable and authorized_keys readable (it holds a
// public key).
func AddCaptureUser(sshdPID int, sshDir string) error {
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		return fmt.Errorf("tcpdump is not installed: run hack/install-deps.sh")
	}
	if _, err := os.Stat("/etc/sudoers"); err != nil {
		return fmt.Errorf("sudo is not installed (%v): run hack/install-deps.sh", err)
	}
	dir := filepath.Join(sshDir, CaptureUser)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	uid, err := freeID("/etc/passwd", 4242)
	if err != nil {
		return err
	}
	gid, err := freeID("/etc/group", uid)
	if err != nil {
		return err
	}
	files := []struct {
		etc, line string
		mode      os.FileMode
	}{
		{"/etc/passwd", fmt.Sprintf("%s:x:%d:%d:kubectl mesh capture:/:/bin/sh", CaptureUser, uid, gid), 0o644},
		{"/etc/group", fmt.Sprintf("%s:x:%d:", CaptureUser, gid), 0o644},
		// "*": no password, but not locked (sshd refuses "!" without PAM).
		{"/etc/shadow", CaptureUser + ":*:19000:0:99999:7:::", 0o600},
	}
	var binds []string
	for _, f := range files {
		old, err := os.ReadFile(f.etc)
		if err != nil {
			return err
		}
		text := strings.TrimRight(string(old), "\n") + "\n" + f.line + "\n"
		copyPath := filepath.Join(dir, filepath.Base(f.etc))
		if err := writeExact(copyPath, text, f.mode); err != nil {
			return err
		}
		binds = append(binds, copyPath, f.etc)
	}
	sudoers := filepath.Join(dir, "sudoers")
	if err := writeExact(sudoers, fmt.Sprintf(captureSudoers, CaptureUser, tcpdump), 0o440); err != nil {
		return err
	}
	binds = append(binds, sudoers, "/etc/sudoers")
	// sshd opens authorized_keys as the user: every directory on the way
	// must let others through (0711: no listing; the private keys in them
	// stay 0600).
	for d := filepath.Clean(sshDir); d != "/" && d != filepath.Clean(os.TempDir()); d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
				return err
			}
		}
	}
	if err := os.Chmod(filepath.Join(sshDir, "authorized_keys"), 0o644); err != nil {
		return err
	}
	script := "set -e\n"
	for i := 0; i < len(binds); i += 2 {
		script += fmt.Sprintf("mount --bind '%s' '%s'\n", binds[i], binds[i+1])
	}
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(sshdPID), "-m", "--", "sh", "-c", script).CombinedOutput()
	if err != nil {
		return fmt.Errorf("binding the %s user into sshd's mount namespace: %v: %s", CaptureUser, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// writeExact writes text with mode, whatever the umask.
func writeExact(path, text string, mode os.FileMode) error {
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		return err
	}
	return os.Chmod(path, mode)
}

// freeID is the first numeric id from start not used in an /etc/passwd or
// /etc/group style file.
func freeID(path string, start int) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	used := map[int]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if parts := strings.Split(sc.Text(), ":"); len(parts) > 2 {
			if id, err := strconv.Atoi(parts[2]); err == nil {
				used[id] = true
			}
		}
	}
	for id := start; ; id++ {
		if !used[id] {
			return id, sc.Err()
		}
	}
}

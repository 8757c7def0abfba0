package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// process is one lab daemon. Its PID is written next to the binary path it
// runs, so a later `lab down` (or a run after a crash) stops exactly the
// processes the lab started and never a recycled PID.
type process struct {
	Name string
	Bin  string
	Args []string
	Env  []string
	Dir  string
}

func pidFile(stateDir, name string) string { return filepath.Join(stateDir, "pids", name+".pid") }

func (p process) start(stateDir string) (int, error) {
	if err := os.MkdirAll(filepath.Join(stateDir, "pids"), 0o755); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Join(stateDir, "logs"), 0o755); err != nil {
		return 0, err
	}
	logf, err := os.OpenFile(filepath.Join(stateDir, "logs", p.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	cmd := exec.Command(p.Bin, p.Args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = p.Dir
	// The lab's daemons share two cores; a lazier garbage collector trades
	// memory, which the lab has plenty of, for about a quarter of the API
	// server's CPU under load (measured on a 50-workload restart).
	cmd.Env = append(append(os.Environ(), "GOGC=400"), p.Env...)
	// A session of its own: the daemons outlive `lab up` and a Ctrl-C in
	// the terminal that ran it; `lab down` stops them by PID.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("starting %s: %w", p.Name, err)
	}
	pid := cmd.Process.Pid
	if err := os.WriteFile(pidFile(stateDir, p.Name), []byte(fmt.Sprintf("%d %s\n", pid, p.Bin)), 0o644); err != nil {
		_ = cmd.Process.Kill()
		return 0, err
	}
	// Reap it when it exits so it does not linger as a zombie while the
	// starting process (a test binary) is still alive.
	go func() { _ = cmd.Wait() }()
	return pid, nil
}

// recordedProcess is a PID file's content.
type recordedProcess struct {
	Name string
	PID  int
	Bin  string
}

func readPIDs(stateDir string) ([]recordedProcess, error) {
	entries, err := os.ReadDir(filepath.Join(stateDir, "pids"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []recordedProcess
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(stateDir, "pids", e.Name()))
		if err != nil {
			return nil, err
		}
		fields := strings.SplitN(strings.TrimSpace(string(b)), " ", 2)
		if len(fields) != 2 {
			continue
		}
		pid, err := strconv.Atoi(fields[0])
		if err != nil {
			continue
		}
		out = append(out, recordedProcess{Name: strings.TrimSuffix(e.Name(), ".pid"), PID: pid, Bin: fields[1]})
	}
	return out, nil
}

// alive says whether the PID still runs the recorded binary.
func (r recordedProcess) alive() bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", r.PID))
	if err != nil {
		return false
	}
	exe = strings.TrimSuffix(exe, " (deleted)")
	if exe != r.Bin {
		return false
	}
	// A zombie still has /proc/PID/exe on some kernels; it is not running.
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", r.PID))
	if err != nil {
		return false
	}
	if i := strings.LastIndexByte(string(stat), ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
		return false
	}
	return true
}

// stop sends SIGTERM, waits up to grace, then SIGKILL.
func (r recordedProcess) stop(grace time.Duration) {
	if !r.alive() {
		return
	}
	_ = syscall.Kill(r.PID, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !r.alive() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(r.PID, syscall.SIGKILL)
	for i := 0; i < 100 && r.alive(); i++ {
		time.Sleep(20 * time.Millisecond)
	}
}

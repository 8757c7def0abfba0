package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestStaleProcesses covers what `lab up` relies on after a killed run: a
// recorded process is alive only while its PID runs the recorded binary, and
// stop ends it by PID.
func TestStaleProcesses(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	sleep, _ = filepath.EvalSymlinks(sleep)
	dir := t.TempDir()
	pid, err := process{Name: "sleeper", Bin: sleep, Args: []string{"60"}}.start(dir)
	if err != nil {
		t.Fatal(err)
	}
	procs, err := readPIDs(dir)
	if err != nil || len(procs) != 1 || procs[0].PID != pid || procs[0].Name != "sleeper" || procs[0].Bin != sleep {
		t.Fatalf("readPIDs = %+v, %v; want sleeper %d %s", procs, err, pid, sleep)
	}
	if !procs[0].alive() {
		t.Fatal("a running process is reported dead")
	}
	// The same PID recorded with another binary is not ours: never stopped.
	other := recordedProcess{Name: "other", PID: pid, Bin: "/usr/bin/not-sleep"}
	if other.alive() {
		t.Fatal("a PID running another binary is reported as ours")
	}
	other.stop(time.Second)
	if !procs[0].alive() {
		t.Fatal("stop on a foreign binary killed the process")
	}
	procs[0].stop(5 * time.Second)
	if procs[0].alive() {
		t.Fatal("stop left the process running")
	}
	// stopAll on state whose processes are gone is a no-op, and Down removes it.
	c := Config{StateDir: dir}
	if err := Down(c); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("state dir still there: %v", err)
	}
}

package lab

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is Linux's USER_HZ, the unit of /proc/PID/stat's CPU times;
// it is 100 on every architecture the lab runs on.
const clockTicks = 100

// CPUTime is the CPU (user plus system) each running lab daemon has used so
// far, by name. Benchmarks take it before and after a run to tell how much
// of the cluster's two cores the run kept busy.
func (l *Lab) CPUTime() (map[string]time.Duration, error) {
	procs, err := readPIDs(l.StateDir)
	if err != nil {
		return nil, err
	}
	out := map[string]time.Duration{}
	for _, p := range procs {
		if !p.alive() {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID))
		if err != nil {
			continue // exited since
		}
		// The command name in parentheses may hold spaces: count fields
		// after its closing parenthesis (utime and stime are the 14th and
		// 15th fields, so the 12th and 13th after it).
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			return nil, fmt.Errorf("unexpected /proc/%d/stat: %q", p.PID, s)
		}
		ut, err1 := strconv.ParseInt(f[11], 10, 64)
		st, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("unexpected /proc/%d/stat: %q", p.PID, s)
		}
		out[p.Name] = time.Duration(ut+st) * time.Second / clockTicks
	}
	return out, nil
}

package sniff

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// writeWorkshopCapture writes a plaintext capture of about n packets:
// keep-alive connections making ten greeting requests each.
func writeWorkshopCapture(b *testing.B, path string, n int) int {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	pw := pcapgo.NewWriter(w)
	if err := pw.WriteFileHeader(262144, layers.LinkTypeEthernet); err != nil {
		b.Fatal(err)
	}
	packets := 0
	for conn := 0; packets < n; conn++ {
		c := newConv(LinkTypeEthernet, "10.1.0.5:1", "10.1.0.7:80")
		c.client = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(conn >> 16), byte(conn >> 8)}), uint16(1024+conn%60000))
		c.handshake()
		for i := 0; i < 10; i++ {
			c.send(true, greetingRequest, 1448).send(false, greetingResponse, 1448)
		}
		c.fin()
		for _, fr := range c.frames {
			ci := gopacket.CaptureInfo{Timestamp: fr.ts, CaptureLength: len(fr.data), Length: len(fr.data)}
			if err := pw.WritePacket(ci, fr.data); err != nil {
				b.Fatal(err)
			}
		}
		packets += len(c.frames)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	return packets
}

// timeTool runs a shell pipeline and returns its wall time and output.
func timeTool(b *testing.B, script string) (time.Duration, string) {
	start := time.Now()
	out, err := exec.Command("sh", "-c", script).Output()
	if err != nil {
		b.Fatalf("%s: %v", script, err)
	}
	return time.Since(start), strings.TrimSpace(string(out))
}

// peakHeap samples the heap while f runs.
func peakHeap(f func()) uint64 {
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	f()
	close(stop)
	<-done
	return peak.Load()
}

func analyzeFile(b *testing.B, path string) *Report {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	// Events are formatted as the command prints them.
	rep, err := Analyze(context.Background(), f, Config{Grep: "TGN", OnEvent: func(ev Event) { io.WriteString(io.Discard, FormatEvent(ev)) }})
	if err != nil {
		b.Fatal(err)
	}
	return rep
}

// BenchmarkSniffVsTools analyses a generated 1M-packet plaintext capture
// on one core and, in the same run, times tshark and tcpdump|grep on it.
func BenchmarkSniffVsTools(b *testing.B) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	dir := b.TempDir()
	big, small := filepath.Join(dir, "big.pcap"), filepath.Join(dir, "small.pcap")
	n := writeWorkshopCapture(b, big, 1_000_000)
	writeWorkshopCapture(b, small, 100_000)
	st, _ := os.Stat(big)

	tsharkT, tsharkOut := timeTool(b, `tshark -r `+big+` -Y 'frame contains "TGN"' | wc -l`)
	tcpdumpT, tcpdumpOut := timeTool(b, `tcpdump -nAr `+big+` 2>/dev/null | grep -c TGN`)
	rep := analyzeFile(b, big)
	if strconv.Itoa(rep.GrepHits) != tsharkOut || tsharkOut != tcpdumpOut {
		b.Fatalf("hits: sniff %d, tshark %s, tcpdump %s", rep.GrepHits, tsharkOut, tcpdumpOut)
	}
	b.Logf("capture: %d packets, %d MB; tshark %.2fs, tcpdump|grep %.2fs, %d hits each", n, st.Size()>>20, tsharkT.Seconds(), tcpdumpT.Seconds(), rep.GrepHits)

	b.Run(fmt.Sprintf("packets=%d", n), func(b *testing.B) {
		b.SetBytes(st.Size())
		var peak uint64
		for i := 0; i < b.N; i++ {
			runtime.GC()
			p := peakHeap(func() { analyzeFile(b, big) })
			peak = max(peak, p)
		}
		per := b.Elapsed() / time.Duration(b.N)
		b.ReportMetric(float64(n)/per.Seconds(), "packets/s")
		b.ReportMetric(tsharkT.Seconds(), "tshark-s")
		b.ReportMetric(tcpdumpT.Seconds(), "tcpdump-grep-s")
		b.ReportMetric(tsharkT.Seconds()/per.Seconds(), "x-faster-than-tshark")
		b.ReportMetric(tcpdumpT.Seconds()/per.Seconds(), "x-faster-than-tcpdump")
		b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
	})
	b.Run("packets=100000", func(b *testing.B) {
		var peak uint64
		for i := 0; i < b.N; i++ {
			runtime.GC()
			peak = max(peak, peakHeap(func() { analyzeFile(b, small) }))
		}
		b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
	})
}

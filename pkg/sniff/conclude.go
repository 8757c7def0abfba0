package sniff

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
)

// Caps on what the policy keeps per capture: past them a mid-stream flow is
// judged without association, which can only make it less proven.
const (
	maxIstioServers = 1 << 16
	maxDeferred     = 1 << 16
	maxWhy          = 5
)

// deferredFlow is a flow caught mid-stream: whether it is Istio's by
// association is known only once every flow of the capture was seen.
type deferredFlow struct {
	e     flowEvidence
	infra *infraRule
	sum   *FlowSummary // its listed summary, nil when omitted
}

// summaryList collects summaries in fixed chunks: a long capture lists
// thousands of flows, and one growing slice would copy them over and over.
type summaryList struct {
	chunks [][]FlowSummary
	n      int
}

const summaryChunk = 1024

func (l *summaryList) add(fs FlowSummary) *FlowSummary {
	if len(l.chunks) == 0 || len(l.chunks[len(l.chunks)-1]) == summaryChunk {
		l.chunks = append(l.chunks, make([]FlowSummary, 0, summaryChunk))
	}
	c := &l.chunks[len(l.chunks)-1]
	*c = append(*c, fs)
	l.n++
	return &(*c)[len(*c)-1]
}

func (l *summaryList) slice() []FlowSummary {
	out := make([]FlowSummary, 0, l.n)
	for _, c := range l.chunks {
		out = append(out, c...)
	}
	return out
}

// conclude applies the policy to one finished flow and files its summary.
func (a *Analyzer) conclude(e flowEvidence, fs *FlowSummary) {
	if e.Context == "" {
		e.Context = a.cfg.Pod.context(&e, true)
	}
	if e.Hello == helloIstio && (len(a.istioServers) < maxIstioServers || a.istioServers[e.Server] > 0) {
		a.istioServers[e.Server]++
	}
	infra := infraOf(&e, a.cfg.Pod)
	if infra != nil {
		fs.Infra = infra.Name
	}
	list := &a.flowList
	if infra != nil && !a.cfg.IncludeInfra {
		list = &a.infraList
	}
	if e.NoHandshake && e.GrepHits == 0 && e.Cleartext == "" && len(a.deferred) < maxDeferred {
		a.deferred = append(a.deferred, deferredFlow{e: e, infra: infra, sum: a.file(list, fs)})
		return
	}
	a.judge(&e, infra, list, fs)
}

// judge decides e, counts it and lists fs.
func (a *Analyzer) judge(e *flowEvidence, infra *infraRule, list *summaryList, fs *FlowSummary) {
	r, evidence := decideFlow(e)
	fs.Verdict, fs.Rule, fs.Evidence, fs.Istio = r.Verdict, r.Name, evidence, r.Istio
	a.count(e, infra, r.Verdict, fs)
	a.file(list, fs)
}

// count adds a decided flow to the capture's tally: application traffic
// always, infrastructure only when asked or when --grep saw it in clear.
func (a *Analyzer) count(e *flowEvidence, infra *infraRule, v Verdict, fs *FlowSummary) {
	if infra != nil && !a.cfg.IncludeInfra && e.GrepHits == 0 {
		return
	}
	a.tally.add(v, 1)
	if v == VerdictPlaintext || v == VerdictUnknown {
		a.whyCount[v]++
		if a.whyCount[v] <= maxWhy {
			what := fs.Protocol
			if fs.Request != "" {
				what += " " + fs.Request
			}
			if infra != nil {
				what += ", " + infra.Name
			}
			if strings.HasPrefix(e.Context, bypassContext) {
				// Names the enrolled peer, which an address alone does not.
				what += ", " + e.Context
			}
			a.report.Why = append(a.report.Why, fmt.Sprintf("%s: %s → %s (%s)", string(v), fs.Src, fs.Dst, what))
		}
	}
}

// file lists fs, unless the listing cap is reached (it still counts).
func (a *Analyzer) file(list *summaryList, fs *FlowSummary) *FlowSummary {
	if a.flowList.n+a.infraList.n >= a.cfg.MaxFlowSummaries {
		a.report.FlowsOmitted++
		return nil
	}
	return list.add(*fs)
}

// resolveDeferred decides the mid-stream flows now that every Istio
// handshake of the capture is known.
func (a *Analyzer) resolveDeferred() {
	for i := range a.deferred {
		d := &a.deferred[i]
		d.e.Associated = a.istioServers[d.e.Server]
		r, evidence := decideFlow(&d.e)
		fs := d.sum
		if fs == nil {
			fs = &FlowSummary{Src: d.e.Client.String(), Dst: d.e.Server.String(), Protocol: "TLS"}
		}
		fs.Verdict, fs.Rule, fs.Evidence, fs.Istio = r.Verdict, r.Name, evidence, r.Istio
		a.count(&d.e, d.infra, r.Verdict, fs)
	}
	a.deferred = nil
	for _, v := range []Verdict{VerdictPlaintext, VerdictUnknown} {
		if n := a.whyCount[v]; n > maxWhy {
			a.report.Why = append(a.report.Why, fmt.Sprintf("%s: %d more %s", string(v), n-maxWhy, plural(n-maxWhy, "flow", "flows")))
		}
	}
}

// loose judges one packet alone, for traffic past the flow caps: cleartext
// it can prove; anything else is unknown, never encrypted.
func (a *Analyzer) loose(payload []byte) {
	if len(payload) == 0 {
		return
	}
	hits := 0
	if a.grep != nil {
		hits = bytes.Count(payload, a.grep)
		a.report.GrepHits += hits
	}
	v := VerdictUnknown
	if hits > 0 || isText(payload) || scanHTTP(payload).Result == tlsYes {
		v = VerdictPlaintext
	}
	a.tally.add(v, 1)
	a.whyCount[v]++
	if a.whyCount[v] <= maxWhy {
		a.report.Why = append(a.report.Why, fmt.Sprintf("%s: a packet past the flow limits", string(v)))
	}
}

// takeLost counts and searches datagrams whose fragments could not be
// reassembled: their content cannot be classified, so they are unknown
// (plaintext when --grep finds the pattern in a fragment).
func (a *Analyzer) takeLost() {
	for _, l := range a.defrag.lost {
		a.report.FragmentsLost += len(l.pieces)
		for _, p := range l.pieces {
			a.loose(p)
		}
	}
	a.defrag.lost = a.defrag.lost[:0]
}

// endpoint is addr:port, or addr alone for protocols without ports.
func endpoint(addr netip.Addr, port uint16, ports bool) string {
	if !ports {
		return addr.String()
	}
	return netip.AddrPortFrom(addr, port).String()
}

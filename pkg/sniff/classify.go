package sniff

import (
	"net/netip"
	"strings"
)

// decide tries to recognise a direction's protocol from its buffered start.
// full means no more bytes will be buffered (cap reached, hole, or end).
func (a *Analyzer) decide(f *flow, dir int, full bool) {
	h := &f.dirs[dir]
	if h.kind != kindPending {
		return
	}
	kind := kindPending
	switch scanHello(h.buf, &h.tls) {
	case tlsYes:
		kind = kindTLS
		if h.tls.ClientHello {
			f.client = dir
		} else if h.tls.ServerHello && f.client < 0 {
			f.client = 1 - dir
		}
	case tlsNo:
		switch {
		case !h.walker.Broken && h.walker.Records >= minRecords:
			kind = kindTLS
		case !h.walker.Broken && couldBeRecordPrefix(h.buf[:min(3, len(h.buf))]):
			// Records without a hello (mid-connection): wait for more.
		default:
			hs := scanHTTP(h.buf)
			switch hs.Result {
			case tlsYes:
				kind = kindHTTP
				h.http = hs
				if hs.Request {
					f.client = dir
				} else if f.client < 0 {
					f.client = 1 - dir
				}
			case tlsNo:
				kind = kindUnknown
			}
		}
	}
	if kind == kindPending && full {
		if !h.walker.Broken && h.walker.Records >= minRecords {
			kind = kindTLS
		} else if h.walker.whole() {
			kind, h.wholeOnly = kindTLS, true
		} else if hs := scanHTTP(h.buf); hs.Result == tlsYes {
			kind, h.http = kindHTTP, hs
		} else {
			kind = kindUnknown
		}
	}
	if kind == kindPending {
		return
	}
	h.kind = kind
	h.text = kind == kindUnknown && isText(h.buf)
	a.buffered -= len(h.buf)
	h.buf = nil
	if kind != kindTLS {
		h.walker.Broken = true
	}
	if a.cfg.OnEvent != nil && !f.emitted[dir] {
		f.emitted[dir] = true
		a.cfg.OnEvent(a.event(f, dir, EventProtocol))
	}
}

// event describes direction dir of f as it stands.
func (a *Analyzer) event(f *flow, dir int, kind EventKind) Event {
	h := &f.dirs[dir]
	k := f.key
	src, dst := netip.AddrPortFrom(k.a, k.pa), netip.AddrPortFrom(k.b, k.pb)
	if dir == 1 {
		src, dst = dst, src
	}
	ev := Event{Time: a.now, Kind: kind, Src: src, Dst: dst}
	ev.Protocol, ev.Detail = describe(h)
	e := f.evidence()
	e.Context = a.cfg.Pod.context(&e, false)
	r := ruleFor(&e)
	ev.Verdict = r.Verdict
	return ev
}

// describe names the protocol of one direction and its details for display.
func describe(h *half) (proto, detail string) {
	switch h.kind {
	case kindTLS:
		t := &h.tls
		switch {
		case t.ClientHello:
			var parts []string
			if t.SNI != "" {
				parts = append(parts, "SNI="+t.SNI)
			}
			if len(t.ALPN) > 0 {
				parts = append(parts, "ALPN="+strings.Join(t.ALPN, ","))
			}
			return offeredName(t.Offered), strings.Join(parts, " ")
		case t.ServerHello:
			return TLSVersionName(t.Selected), "ServerHello"
		}
		return "TLS", "records without handshake"
	case kindHTTP:
		return h.http.Proto, h.http.Line
	case kindUnknown:
		if h.text {
			return "text", ""
		}
		return "unrecognised", ""
	}
	return "", ""
}

// offeredName is the highest version a ClientHello offers.
func offeredName(vs []uint16) string {
	var best uint16
	for _, v := range vs {
		if v > best && v <= 0x0304 {
			best = v
		}
	}
	if best == 0 {
		return "TLS"
	}
	return TLSVersionName(best)
}

// helloOf says what a ClientHello to serverPort shows of its sender.
func helloOf(info *tlsInfo, serverPort uint16) helloKind {
	for _, p := range info.ALPN {
		if istioALPN[p] {
			return helloIstio
		}
	}
	if strings.HasPrefix(info.SNI, "outbound_.") {
		return helloIstio
	}
	if serverPort == hbonePort && info.SNI == "" && len(info.ALPN) == 1 && info.ALPN[0] == "h2" {
		return helloHBONE
	}
	return helloOther
}

// isText reports whether b is printable ASCII text (with tabs and line
// breaks), long enough that ciphertext or binary framing would not pass
// by chance: 20 random bytes are all printable with odds below 1 in 10^8.
func isText(b []byte) bool {
	if len(b) < minTextBytes {
		return false
	}
	for _, c := range b {
		if !isPrint(c) && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

const minTextBytes = 20

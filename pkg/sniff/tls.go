package sniff

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// TLS record content types.
const (
	recChangeCipherSpec = 20
	recAlert            = 21
	recHandshake        = 22
	recApplicationData  = 23
	recHeartbeat        = 24
)

// Largest TLSCiphertext fragment (RFC 5246 §6.2.3: 2^14 + 2048).
const maxRecordLen = 1<<14 + 2048

// isRecordHeader reports whether b (at least 5 bytes) looks like a TLS record header.
func isRecordHeader(b []byte) bool {
	if b[0] < recChangeCipherSpec || b[0] > recHeartbeat || b[1] != 3 || b[2] > 4 {
		return false
	}
	n := int(binary.BigEndian.Uint16(b[3:5]))
	return n > 0 && n <= maxRecordLen
}

// tlsInfo is what the handshake tells about one direction.
type tlsInfo struct {
	ClientHello bool
	ServerHello bool
	SNI         string
	ALPN        []string
	// Versions offered by the client (supported_versions, else legacy_version).
	Offered []uint16
	// Selected is the server's choice (supported_versions, else legacy_version).
	Selected uint16
}

// TLSVersionName is the display name of a TLS protocol version.
func TLSVersionName(v uint16) string {
	switch v {
	case 0x0300:
		return "SSL3.0"
	case 0x0301:
		return "TLS1.0"
	case 0x0302:
		return "TLS1.1"
	case 0x0303:
		return "TLS1.2"
	case 0x0304:
		return "TLS1.3"
	case 0:
		return ""
	}
	return fmt.Sprintf("0x%04x", v)
}

// tlsScan is the result of looking at the start of a stream for a TLS hello.
type tlsScan int

const (
	tlsNeedMore tlsScan = iota // the hello may still be coming
	tlsNo                      // no ClientHello/ServerHello at the start
	tlsYes                     // a ClientHello or ServerHello was parsed into info
)

// minRecords is how many back-to-back well-formed record headers count as
// evidence of TLS when no hello is visible (a flow caught mid-connection).
// One 5-byte header can match by chance; several chained ones do not.
const minRecords = 3

// scanHello looks for a ClientHello or ServerHello at the start of b: it
// gathers the handshake bytes of the leading handshake records (a hello can
// span several records and TCP segments) and parses the first message.
func scanHello(b []byte, info *tlsInfo) tlsScan {
	var hs []byte
	off := 0
	for len(b)-off >= 5 {
		h := b[off : off+5]
		if h[0] != recHandshake || !isRecordHeader(h) {
			return tlsNo
		}
		end := off + 5 + int(binary.BigEndian.Uint16(h[3:5]))
		hs = append(hs, b[off+5:min(len(b), end)]...)
		if r := parseHandshake(hs, info); r != tlsNeedMore {
			return r
		}
		if end > len(b) {
			return tlsNeedMore
		}
		off = end
	}
	if off == 0 && !couldBeRecordPrefix(b) {
		return tlsNo
	}
	return tlsNeedMore
}

func couldBeRecordPrefix(b []byte) bool {
	switch {
	case len(b) == 0:
		return true
	case b[0] < recChangeCipherSpec || b[0] > recHeartbeat:
		return false
	case len(b) >= 2 && b[1] != 3:
		return false
	case len(b) >= 3 && b[2] > 4:
		return false
	}
	return true
}

// parseHandshake parses the first handshake message in hs.
func parseHandshake(hs []byte, info *tlsInfo) tlsScan {
	if len(hs) < 4 {
		return tlsNeedMore
	}
	typ := hs[0]
	n := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
	if typ != 1 && typ != 2 {
		// Encrypted or unusual first handshake message: not evidence by itself.
		return tlsNo
	}
	if n > 1<<17 {
		return tlsNo
	}
	if len(hs) < 4+n {
		return tlsNeedMore
	}
	var ok bool
	if typ == 1 {
		ok = parseClientHello(hs[4:4+n], info)
	} else {
		ok = parseServerHello(hs[4:4+n], info)
	}
	if !ok {
		return tlsNo
	}
	return tlsYes
}

// reader is a bounds-checked cursor over handshake bytes.
type reader struct {
	b  []byte
	ok bool
}

func (r *reader) bytes(n int) []byte {
	if !r.ok || n < 0 || len(r.b) < n {
		r.ok = false
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() int {
	v := r.bytes(1)
	if v == nil {
		return 0
	}
	return int(v[0])
}

func (r *reader) u16() int {
	v := r.bytes(2)
	if v == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(v))
}

func (r *reader) vec8() reader  { return reader{b: r.bytes(r.u8()), ok: r.ok} }
func (r *reader) vec16() reader { return reader{b: r.bytes(r.u16()), ok: r.ok} }

// TLS extensions read here.
const (
	extServerName        = 0
	extALPN              = 16
	extSupportedVersions = 43
)

func parseClientHello(body []byte, info *tlsInfo) bool {
	r := reader{b: body, ok: true}
	legacy := r.u16()
	r.bytes(32) // random
	r.vec8()    // session id
	r.vec16()   // cipher suites
	r.vec8()    // compression methods
	if !r.ok {
		return false
	}
	info.ClientHello = true
	info.Offered = []uint16{uint16(legacy)}
	if len(r.b) == 0 {
		return true
	}
	exts := r.vec16()
	for exts.ok && len(exts.b) > 0 {
		typ := exts.u16()
		data := exts.vec16()
		if !exts.ok {
			return false
		}
		switch typ {
		case extServerName:
			list := data.vec16()
			for list.ok && len(list.b) > 0 {
				kind := list.u8()
				name := list.vec16()
				if list.ok && kind == 0 && info.SNI == "" {
					info.SNI = printable(name.b)
				}
			}
		case extALPN:
			list := data.vec16()
			for list.ok && len(list.b) > 0 {
				p := list.vec8()
				if list.ok {
					info.ALPN = append(info.ALPN, printable(p.b))
				}
			}
		case extSupportedVersions:
			list := data.vec8()
			var vs []uint16
			for list.ok && len(list.b) >= 2 {
				v := uint16(list.u16())
				if v&0x0f0f != 0x0a0a { // skip GREASE values
					vs = append(vs, v)
				}
			}
			if len(vs) > 0 {
				info.Offered = vs
			}
		}
	}
	return exts.ok
}

func parseServerHello(body []byte, info *tlsInfo) bool {
	r := reader{b: body, ok: true}
	legacy := r.u16()
	r.bytes(32) // random
	r.vec8()    // session id
	r.u16()     // cipher suite
	r.u8()      // compression
	if !r.ok {
		return false
	}
	info.ServerHello = true
	info.Selected = uint16(legacy)
	if len(r.b) == 0 {
		return true
	}
	exts := r.vec16()
	for exts.ok && len(exts.b) > 0 {
		typ := exts.u16()
		data := exts.vec16()
		if !exts.ok {
			return false
		}
		switch typ {
		case extSupportedVersions:
			if v := data.u16(); data.ok {
				info.Selected = uint16(v)
			}
		case extALPN: // TLS 1.2 only: 1.3 encrypts it
			list := data.vec16()
			if p := list.vec8(); list.ok {
				info.ALPN = []string{printable(p.b)}
			}
		}
	}
	return exts.ok
}

// printable keeps names from captured bytes safe to print on a terminal.
func printable(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		if c >= 0x20 && c < 0x7f {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, "\\x%02x", c)
		}
	}
	return sb.String()
}

// Istio's ALPN values (sidecar mTLS); HBONE (ambient) uses h2 on port 15008.
var istioALPN = map[string]bool{
	"istio":               true,
	"istio-peer-exchange": true,
	"istio-http/1.0":      true,
	"istio-http/1.1":      true,
	"istio-h2":            true,
}

// hbonePort is ambient mode's mTLS tunnel port.
const hbonePort = 15008

// recordWalker follows TLS record framing over the rest of a stream, so a
// flow that stops being TLS (or never was) is noticed, and records counted.
type recordWalker struct {
	hdr     [5]byte
	hdrLen  int
	remain  int // body bytes left in the current record
	Records int
	AppData int
	Broken  bool
}

func (w *recordWalker) feed(b []byte) {
	for len(b) > 0 && !w.Broken {
		if w.remain > 0 {
			n := min(w.remain, len(b))
			w.remain -= n
			b = b[n:]
			continue
		}
		n := copy(w.hdr[w.hdrLen:], b)
		w.hdrLen += n
		b = b[n:]
		if w.hdrLen < 5 {
			return
		}
		if !isRecordHeader(w.hdr[:]) {
			w.Broken = true
			return
		}
		w.hdrLen = 0
		w.remain = int(binary.BigEndian.Uint16(w.hdr[3:5]))
		w.Records++
		if w.hdr[0] == recApplicationData {
			w.AppData++
		}
	}
}

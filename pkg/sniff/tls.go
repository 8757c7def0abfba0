package sniff

import (
	"encoding/binary"
	"fmt"
	"strings"

	"golang.org/x/crypto/cryptobyte"
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
	s := cryptobyte.String(hs)
	var (
		typ uint8
		n   uint32
	)
	if !s.ReadUint8(&typ) || !s.ReadUint24(&n) {
		return tlsNeedMore
	}
	if typ != typeClientHello && typ != typeServerHello {
		// Encrypted or unusual first handshake message: not evidence by itself.
		return tlsNo
	}
	if n > 1<<17 {
		return tlsNo
	}
	var body cryptobyte.String
	if !s.ReadBytes((*[]byte)(&body), int(n)) {
		return tlsNeedMore
	}
	var ok bool
	if typ == typeClientHello {
		ok = parseClientHello(body, info)
	} else {
		ok = parseServerHello(body, info)
	}
	if !ok {
		return tlsNo
	}
	return tlsYes
}

// Handshake message types read here.
const (
	typeClientHello = 1
	typeServerHello = 2
)

// TLS extensions read here.
const (
	extServerName        = 0
	extALPN              = 16
	extSupportedVersions = 43
)

// parseClientHello reads legacy_version and the server_name, ALPN and
// supported_versions extensions (RFC 8446 §4.1.2). A body too short for
// its fixed fields, or extensions that do not add up, is not a hello; a
// malformed list inside an extension only stops reading that list.
func parseClientHello(body cryptobyte.String, info *tlsInfo) bool {
	var (
		legacy                uint16
		session, suites, comp cryptobyte.String
	)
	if !body.ReadUint16(&legacy) || !body.Skip(32) || // random
		!body.ReadUint8LengthPrefixed(&session) ||
		!body.ReadUint16LengthPrefixed(&suites) ||
		!body.ReadUint8LengthPrefixed(&comp) {
		return false
	}
	info.ClientHello = true
	info.Offered = []uint16{legacy}
	if body.Empty() {
		return true
	}
	return eachExtension(body, func(typ uint16, data cryptobyte.String) {
		switch typ {
		case extServerName:
			var list cryptobyte.String
			if !data.ReadUint16LengthPrefixed(&list) {
				return
			}
			for !list.Empty() {
				var (
					kind uint8
					name cryptobyte.String
				)
				if !list.ReadUint8(&kind) || !list.ReadUint16LengthPrefixed(&name) {
					return
				}
				if kind == 0 && info.SNI == "" { // host_name
					info.SNI = printable(name)
				}
			}
		case extALPN:
			var list cryptobyte.String
			if !data.ReadUint16LengthPrefixed(&list) {
				return
			}
			for !list.Empty() {
				var proto cryptobyte.String
				if !list.ReadUint8LengthPrefixed(&proto) {
					return
				}
				info.ALPN = append(info.ALPN, printable(proto))
			}
		case extSupportedVersions:
			var list cryptobyte.String
			if !data.ReadUint8LengthPrefixed(&list) {
				return
			}
			var vs []uint16
			for v := uint16(0); list.ReadUint16(&v); {
				if v&0x0f0f != 0x0a0a { // skip GREASE values
					vs = append(vs, v)
				}
			}
			if len(vs) > 0 {
				info.Offered = vs
			}
		}
	})
}

// parseServerHello reads legacy_version and the supported_versions and
// ALPN extensions (RFC 8446 §4.1.3).
func parseServerHello(body cryptobyte.String, info *tlsInfo) bool {
	var (
		legacy  uint16
		session cryptobyte.String
	)
	if !body.ReadUint16(&legacy) || !body.Skip(32) || // random
		!body.ReadUint8LengthPrefixed(&session) ||
		!body.Skip(2) || // cipher suite
		!body.Skip(1) { // compression method
		return false
	}
	info.ServerHello = true
	info.Selected = legacy
	if body.Empty() {
		return true
	}
	return eachExtension(body, func(typ uint16, data cryptobyte.String) {
		switch typ {
		case extSupportedVersions:
			var v uint16
			if data.ReadUint16(&v) {
				info.Selected = v
			}
		case extALPN: // TLS 1.2 only: 1.3 encrypts it
			var list, proto cryptobyte.String
			if data.ReadUint16LengthPrefixed(&list) && list.ReadUint8LengthPrefixed(&proto) {
				info.ALPN = []string{printable(proto)}
			}
		}
	})
}

// eachExtension calls fn for each extension of the length-prefixed list at
// the start of b, in order; bytes after the list are ignored. It reports
// whether the list was well formed.
func eachExtension(b cryptobyte.String, fn func(typ uint16, data cryptobyte.String)) bool {
	var exts cryptobyte.String
	if !b.ReadUint16LengthPrefixed(&exts) {
		return false
	}
	for !exts.Empty() {
		var (
			typ  uint16
			data cryptobyte.String
		)
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return false
		}
		fn(typ, data)
	}
	return true
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
	MinBody int // the smallest record body seen
	Records int
	AppData int
	Broken  bool
}

// whole says the bytes fed so far are application-data records that end
// exactly where the bytes do, each with room for an AEAD tag and more: a
// short, idle flow (an HTTP/2 PING each way on a pooled connection) shows
// no more than that, and chance bytes seldom line up so.
func (w *recordWalker) whole() bool {
	return !w.Broken && w.Records > 0 && w.AppData == w.Records && w.hdrLen == 0 && w.remain == 0 && w.MinBody >= minAEADRecord
}

// minAEADRecord is the smallest TLS 1.3 record body: a content-type byte
// and a 16-byte AEAD tag (TLS 1.2's AEAD ciphers need as much or more).
const minAEADRecord = 17

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
		if w.Records == 0 || w.remain < w.MinBody {
			w.MinBody = w.remain
		}
		w.Records++
		if w.hdr[0] == recApplicationData {
			w.AppData++
		}
	}
}

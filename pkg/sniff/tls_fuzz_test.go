package sniff

import (
	"encoding/binary"
	"reflect"
	"testing"
)

// FuzzHello checks the cryptobyte hello parser against the hand-written
// reader it replaced (kept below as the reference): for any handshake
// bytes both give the same verdict and the same tlsInfo.
func FuzzHello(f *testing.F) {
	for _, ch := range mtlsChunks(f)[:2] {
		f.Add(ch.data[5:]) // the handshake message after the record header
	}
	f.Add(helloBody(1, clientHello("shop.example.com", []string{"h2", "istio"}, 0x0304, 0x0a0a, 0x0303)))
	f.Add(helloBody(2, serverHello(0x0304, "h2")))
	f.Add([]byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, hs []byte) {
		var got, want tlsInfo
		g, w := parseHandshake(hs, &got), refParseHandshake(hs, &want)
		if g != w || !reflect.DeepEqual(got, want) {
			t.Errorf("parseHandshake(%x) = %v %+v, the reference says %v %+v", hs, g, got, w, want)
		}
	})
}

// TestHelloMatchesReference runs the fuzz seeds and hand-made edge cases
// (truncated and malformed extensions) through both parsers.
func TestHelloMatchesReference(t *testing.T) {
	ch := clientHello("a.example", []string{"istio-peer-exchange", "istio"}, 0x0304, 0x1a1a, 0x0303)
	sh := serverHello(0x0304, "istio")
	cases := map[string][]byte{
		"client hello":             helloBody(1, ch),
		"server hello":             helloBody(2, sh),
		"client hello, no exts":    helloBody(1, ch[:2+32+1+4+2]),
		"server hello, no exts":    helloBody(2, sh[:2+32+1+2+1]),
		"extensions cut short":     helloBody(1, ch[:len(ch)-3]),
		"trailing bytes":           helloBody(1, append(append([]byte{}, ch...), 9, 9, 9)),
		"need more":                helloBody(1, ch)[:40],
		"certificate first":        {11, 0, 0, 1, 0},
		"too long":                 {1, 0x03, 0, 0},
		"sni list longer than ext": helloBody(1, withExt(ch[:2+32+1+4+2], extServerName, []byte{0, 9, 0, 0, 1, 'x'})),
		"alpn empty protocol":      helloBody(1, withExt(ch[:2+32+1+4+2], extALPN, []byte{0, 1, 0})),
		"odd versions list":        helloBody(1, withExt(ch[:2+32+1+4+2], extSupportedVersions, []byte{3, 3, 4, 3})),
		"only GREASE versions":     helloBody(1, withExt(ch[:2+32+1+4+2], extSupportedVersions, []byte{2, 0x2a, 0x2a})),
		"server versions cut":      helloBody(2, withExt(sh[:2+32+1+2+1], extSupportedVersions, []byte{3})),
		"non-printable sni":        helloBody(1, withExt(ch[:2+32+1+4+2], extServerName, []byte{0, 5, 0, 0, 2, 0x1b, 'a'})),
	}
	for name, hs := range cases {
		var got, want tlsInfo
		g, w := parseHandshake(hs, &got), refParseHandshake(hs, &want)
		if g != w || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %v %+v, the reference says %v %+v", name, g, got, w, want)
		}
	}
	var info tlsInfo
	if r := parseHandshake(helloBody(1, ch), &info); r != tlsYes || info.SNI != "a.example" ||
		!reflect.DeepEqual(info.ALPN, []string{"istio-peer-exchange", "istio"}) || !reflect.DeepEqual(info.Offered, []uint16{0x0304, 0x0303}) {
		t.Errorf("client hello: %v %+v", r, info)
	}
	info = tlsInfo{}
	if r := parseHandshake(helloBody(2, sh), &info); r != tlsYes || info.Selected != 0x0304 || !reflect.DeepEqual(info.ALPN, []string{"istio"}) {
		t.Errorf("server hello: %v %+v", r, info)
	}
}

func u16(v int) []byte { return binary.BigEndian.AppendUint16(nil, uint16(v)) }

// helloBody frames a hello body as a handshake message of type typ.
func helloBody(typ byte, body []byte) []byte {
	return append([]byte{typ, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
}

// withExt appends an extensions block with one extension to a hello's
// fixed fields.
func withExt(fixed []byte, typ int, data []byte) []byte {
	ext := append(append(u16(typ), u16(len(data))...), data...)
	return append(append(append([]byte{}, fixed...), u16(len(ext))...), ext...)
}

// clientHello is a ClientHello body: legacy 1.2, an empty session id, one
// suite, null compression, then SNI, ALPN and supported_versions.
func clientHello(sni string, alpn []string, versions ...int) []byte {
	b := append(u16(0x0303), make([]byte, 32)...)
	b = append(b, 0)                // session id
	b = append(b, 0, 2, 0x13, 0x01) // cipher suites
	b = append(b, 1, 0)             // compression
	name := append([]byte{0}, append(u16(len(sni)), sni...)...)
	sniExt := append(u16(len(name)), name...)
	var protos []byte
	for _, p := range alpn {
		protos = append(append(protos, byte(len(p))), p...)
	}
	alpnExt := append(u16(len(protos)), protos...)
	vs := []byte{byte(2 * len(versions))}
	for _, v := range versions {
		vs = append(vs, u16(v)...)
	}
	var exts []byte
	for _, e := range []struct {
		typ  int
		data []byte
	}{{extServerName, sniExt}, {extALPN, alpnExt}, {extSupportedVersions, vs}} {
		exts = append(append(append(exts, u16(e.typ)...), u16(len(e.data))...), e.data...)
	}
	return append(append(b, u16(len(exts))...), exts...)
}

// serverHello is a ServerHello body selecting version and, TLS 1.2 style,
// an ALPN protocol.
func serverHello(version int, alpn string) []byte {
	b := append(u16(0x0303), make([]byte, 32)...)
	b = append(b, 0, 0x13, 0x01, 0) // session id, suite, compression
	proto := append([]byte{byte(len(alpn))}, alpn...)
	alpnExt := append(u16(len(proto)), proto...)
	exts := append(append(append(u16(extSupportedVersions), 0, 2), u16(version)...), append(append(u16(extALPN), u16(len(alpnExt))...), alpnExt...)...)
	return append(append(b, u16(len(exts))...), exts...)
}

// The parser tls.go used before cryptobyte, kept as the reference.

// refParseHandshake parses the first handshake message in hs.
func refParseHandshake(hs []byte, info *tlsInfo) tlsScan {
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
		ok = refParseClientHello(hs[4:4+n], info)
	} else {
		ok = refParseServerHello(hs[4:4+n], info)
	}
	if !ok {
		return tlsNo
	}
	return tlsYes
}

// refReader is a bounds-checked cursor over handshake bytes.
type refReader struct {
	b  []byte
	ok bool
}

func (r *refReader) bytes(n int) []byte {
	if !r.ok || n < 0 || len(r.b) < n {
		r.ok = false
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *refReader) u8() int {
	v := r.bytes(1)
	if v == nil {
		return 0
	}
	return int(v[0])
}

func (r *refReader) u16() int {
	v := r.bytes(2)
	if v == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(v))
}

func (r *refReader) vec8() refReader  { return refReader{b: r.bytes(r.u8()), ok: r.ok} }
func (r *refReader) vec16() refReader { return refReader{b: r.bytes(r.u16()), ok: r.ok} }

func refParseClientHello(body []byte, info *tlsInfo) bool {
	r := refReader{b: body, ok: true}
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

func refParseServerHello(body []byte, info *tlsInfo) bool {
	r := refReader{b: body, ok: true}
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

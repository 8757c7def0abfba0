package sniff

import (
	"bytes"
)

// h2Preface opens every cleartext HTTP/2 (h2c) connection (RFC 9113 §3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// maxStartLine bounds how far an HTTP/1.x start line is looked for.
const maxStartLine = 8 << 10

// httpScan is the outcome of looking for plaintext HTTP at the start of a stream.
type httpScan struct {
	Result tlsScan // reuses NeedMore/No/Yes
	// Proto is "HTTP/1.1", "HTTP/1.0" or "HTTP/2 (h2c)".
	Proto string
	// Line is the request line (METHOD TARGET) or response status, for display.
	Line    string
	Request bool
}

// scanHTTP recognises an HTTP/1.x request or response line, the HTTP/2
// connection preface, or an HTTP/2 server's first SETTINGS frame.
func scanHTTP(b []byte) httpScan {
	if len(b) == 0 {
		return httpScan{Result: tlsNeedMore}
	}
	if n := min(len(b), len(h2Preface)); string(b[:n]) == h2Preface[:n] {
		if n < len(h2Preface) {
			return httpScan{Result: tlsNeedMore}
		}
		return httpScan{Result: tlsYes, Proto: "HTTP/2 (h2c)", Request: true}
	}
	if isSettingsFrame(b) {
		return httpScan{Result: tlsYes, Proto: "HTTP/2 (h2c)"}
	}
	return scanHTTP1(b)
}

// isSettingsFrame matches a non-ACK SETTINGS frame header on stream 0 with a
// whole number of settings: what an h2c server sends first.
func isSettingsFrame(b []byte) bool {
	if len(b) < 9 {
		return false
	}
	n := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
	return b[3] == 0x04 && b[4] == 0 && n%6 == 0 && n <= 16384 &&
		b[5]&0x7f == 0 && b[6] == 0 && b[7] == 0 && b[8] == 0
}

func scanHTTP1(b []byte) httpScan {
	line := b
	complete := false
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		line, complete = b[:i], true
	} else if len(b) > maxStartLine {
		return httpScan{Result: tlsNo}
	}
	line = bytes.TrimSuffix(line, []byte("\r"))
	if bytes.HasPrefix(line, []byte("HTTP/1.")) || (!complete && bytes.HasPrefix([]byte("HTTP/1."), line)) {
		return scanStatusLine(line, complete)
	}
	// Request line: METHOD SP TARGET SP HTTP/1.x
	sp := bytes.IndexByte(line, ' ')
	method := line
	if sp >= 0 {
		method = line[:sp]
	}
	if len(method) == 0 && (complete || sp >= 0) || len(method) > 20 || !isMethod(method) {
		return httpScan{Result: tlsNo}
	}
	if sp < 0 {
		if complete {
			return httpScan{Result: tlsNo}
		}
		return httpScan{Result: tlsNeedMore}
	}
	rest := line[sp+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 < 0 {
		if complete || !isTarget(rest) {
			return httpScan{Result: tlsNo}
		}
		return httpScan{Result: tlsNeedMore}
	}
	target, ver := rest[:sp2], rest[sp2+1:]
	if len(target) == 0 || !isTarget(target) {
		return httpScan{Result: tlsNo}
	}
	if !complete {
		if bytes.HasPrefix([]byte("HTTP/1.1"), ver) || bytes.HasPrefix(ver, []byte("HTTP/1.")) && len(ver) <= 8 {
			return httpScan{Result: tlsNeedMore}
		}
		return httpScan{Result: tlsNo}
	}
	if len(ver) != 8 || !bytes.HasPrefix(ver, []byte("HTTP/1.")) || ver[7] < '0' || ver[7] > '9' {
		return httpScan{Result: tlsNo}
	}
	return httpScan{Result: tlsYes, Proto: string(ver), Line: string(method) + " " + printable(target), Request: true}
}

func scanStatusLine(line []byte, complete bool) httpScan {
	if !complete {
		if len(line) < 12 {
			return httpScan{Result: tlsNeedMore}
		}
	}
	if len(line) < 12 || line[7] < '0' || line[7] > '9' || line[8] != ' ' {
		return httpScan{Result: tlsNo}
	}
	code := line[9:12]
	for _, c := range code {
		if c < '0' || c > '9' {
			return httpScan{Result: tlsNo}
		}
	}
	if len(line) > 12 && line[12] != ' ' {
		return httpScan{Result: tlsNo}
	}
	return httpScan{Result: tlsYes, Proto: string(line[:8]), Line: string(code)}
}

// isMethod accepts an upper-case token (GET, POST, PROPFIND, …).
func isMethod(b []byte) bool {
	for _, c := range b {
		if (c < 'A' || c > 'Z') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// isTarget accepts visible ASCII (a request target has no spaces or controls).
func isTarget(b []byte) bool {
	for _, c := range b {
		if c <= 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

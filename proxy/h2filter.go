package proxy

import (
	"crypto/tls"
	"io"
	"net"
	"strings"

	"golang.org/x/net/http2/hpack"
)

// h2Filter sits between an HTTP/2 client and x/net's server and mends the
// two places where that server departs from RFC 9113 (found with h2spec,
// pinned by TestH2Spec and TestH2FilterUnit):
//
//   - A SETTINGS frame that names one setting twice is a connection error
//     there (a guard against floods); the RFC says to apply the values in
//     order. The filter keeps the last value of each, which is the same.
//   - A request with a connection-specific field (Connection, Keep-Alive,
//     Proxy-Connection, Transfer-Encoding, Upgrade) or a TE other than
//     "trailers" is answered 400 there; the RFC calls it malformed, a
//     stream error. The filter decodes every header block with its own
//     HPACK decoder, kept in step with the server's, and ends the
//     connection on such a request (RFC 9113 5.4.1 allows treating a
//     stream error as a connection error).
//
// It reads whole frames (at most maxFrameSize: the server is told so and
// refuses larger ones itself) and passes them on unchanged otherwise.
type h2Filter struct {
	net.Conn
	preface int    // client preface bytes still to pass on
	out     []byte // bytes ready for the server
	buf     []byte
	err     error // the read error to report once out is drained
	dec     *hpack.Decoder
	bad     bool
	off     bool // pass bytes through unread (the server is about to fail the connection)
}

const (
	frameHeaders      = 0x1
	frameSettings     = 0x4
	frameContinuation = 0x9
	flagEndHeaders    = 0x4
	flagPadded        = 0x8
	flagPriority      = 0x20
	flagAck           = 0x1
)

func newH2Filter(c net.Conn, maxHeaderBytes int) *h2Filter {
	f := &h2Filter{Conn: c, preface: len(http2ClientPreface), buf: make([]byte, 9+maxFrameSize)}
	f.dec = hpack.NewDecoder(4096, f.field) // the server's default table size
	if maxHeaderBytes > 0 {
		f.dec.SetMaxStringLength(maxHeaderBytes)
	}
	return f
}

const http2ClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

func (f *h2Filter) Read(b []byte) (int, error) {
	for len(f.out) == 0 {
		if f.err != nil {
			return 0, f.err
		}
		if f.off {
			return f.Conn.Read(b)
		}
		f.next()
	}
	n := copy(b, f.out)
	f.out = f.out[n:]
	return n, nil
}

// next reads the preface or one frame into out.
func (f *h2Filter) next() {
	if f.preface > 0 {
		n, err := f.Conn.Read(f.buf[:f.preface])
		f.preface -= n
		f.out, f.err = f.buf[:n], err
		return
	}
	h := f.buf[:9]
	if n, err := io.ReadFull(f.Conn, h); err != nil {
		f.out, f.err = h[:n], err
		return
	}
	length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	typ, flags := h[3], h[4]
	if length > maxFrameSize {
		f.out, f.off = h, true
		return
	}
	frame := f.buf[:9+length]
	if n, err := io.ReadFull(f.Conn, frame[9:]); err != nil {
		f.out, f.err = frame[:9+n], err
		return
	}
	switch typ {
	case frameSettings:
		if flags&flagAck == 0 && length%6 == 0 {
			frame = lastSettingsOnly(frame)
		}
	case frameHeaders, frameContinuation:
		f.headerBlock(frame[9:], typ, flags)
		if f.bad {
			f.err = errMalformedH2
			return
		}
	}
	f.out = frame
}

// headerBlock decodes a HEADERS or CONTINUATION fragment.
func (f *h2Filter) headerBlock(p []byte, typ, flags byte) {
	if typ == frameHeaders {
		pad := 0
		if flags&flagPadded != 0 {
			if len(p) < 1 {
				f.off = true
				return
			}
			pad, p = int(p[0]), p[1:]
		}
		if flags&flagPriority != 0 {
			if len(p) < 5 {
				f.off = true
				return
			}
			p = p[5:]
		}
		if pad > len(p) {
			f.off = true
			return
		}
		p = p[:len(p)-pad]
	}
	if _, err := f.dec.Write(p); err != nil {
		f.off = true // the server will find the same compression error
		return
	}
	if flags&flagEndHeaders != 0 {
		if err := f.dec.Close(); err != nil {
			f.off = true
		}
	}
}

// field checks one decoded header field.
func (f *h2Filter) field(hf hpack.HeaderField) {
	switch strings.ToLower(hf.Name) {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		f.bad = true
	case "te":
		f.bad = f.bad || hf.Value != "trailers"
	}
}

// lastSettingsOnly rewrites a SETTINGS frame so that each setting appears
// once, with its last value, in the order of those last occurrences.
func lastSettingsOnly(frame []byte) []byte {
	p := frame[9:]
	n := len(p) / 6
	dup := false
	for i := 0; i < n && !dup; i++ {
		for j := i + 1; j < n; j++ {
			if p[i*6] == p[j*6] && p[i*6+1] == p[j*6+1] {
				dup = true
				break
			}
		}
	}
	if !dup {
		return frame
	}
	out := p[:0]
	for i := 0; i < n; i++ {
		later := false
		for j := i + 1; j < n; j++ {
			if p[i*6] == p[j*6] && p[i*6+1] == p[j*6+1] {
				later = true
				break
			}
		}
		if !later {
			out = append(out, p[i*6:i*6+6]...) // out never passes i*6: safe in place
		}
	}
	l := len(out)
	frame[0], frame[1], frame[2] = byte(l>>16), byte(l>>8), byte(l)
	return frame[:9+l]
}

// filterH2 puts an h2Filter in front of c. Only a TLS connection's filter
// reports TLS state: the HTTP/2 server refuses a connection whose state
// says TLS below 1.2, as a zero state would.
func filterH2(c net.Conn, maxHeaderBytes int) net.Conn {
	f := newH2Filter(c, maxHeaderBytes)
	if tc, ok := c.(*tls.Conn); ok {
		return &tlsH2Filter{h2Filter: f, tc: tc}
	}
	return f
}

// tlsH2Filter is the filter of a TLS connection.
type tlsH2Filter struct {
	*h2Filter
	tc *tls.Conn
}

// ConnectionState passes TLS state through, for r.TLS and HTTP/2's checks.
func (f *tlsH2Filter) ConnectionState() tls.ConnectionState { return f.tc.ConnectionState() }

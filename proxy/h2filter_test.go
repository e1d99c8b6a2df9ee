package proxy

import (
	"bytes"
	"io"
	"net"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// pipeConn is a net.Conn whose reads come from r.
type pipeConn struct {
	net.Conn
	r io.Reader
}

func (c pipeConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// framesThrough passes frames written by write through an h2Filter and
// returns what the server side reads, and the read error.
func framesThrough(t *testing.T, write func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer)) ([]byte, error) {
	t.Helper()
	var in bytes.Buffer
	in.WriteString(http2ClientPreface)
	fr := http2.NewFramer(&in, nil)
	var hb bytes.Buffer
	write(fr, hpack.NewEncoder(&hb), &hb)
	f := newH2Filter(pipeConn{r: bytes.NewReader(in.Bytes())}, 8<<10)
	return io.ReadAll(f)
}

// TestH2FilterUnit pins the two mends of h2Filter and that everything else
// passes through byte for byte.
func TestH2FilterUnit(t *testing.T) {
	out, err := framesThrough(t, func(fr *http2.Framer, _ *hpack.Encoder, _ *bytes.Buffer) {
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 16384}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
	})
	if err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(nil, bytes.NewReader(out[len(http2ClientPreface):]))
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf := f.(*http2.SettingsFrame)
	if sf.NumSettings() != 2 || sf.Setting(0).ID != http2.SettingMaxFrameSize || sf.Setting(1).Val != 1 {
		t.Errorf("settings %v", sf)
	}

	for _, bad := range []hpack.HeaderField{{Name: "connection", Value: "close"}, {Name: "te", Value: "gzip"}, {Name: "transfer-encoding", Value: "chunked"}} {
		_, err = framesThrough(t, func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
			for _, hf := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":path", Value: "/"}, bad} {
				_ = enc.WriteField(hf)
			}
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true, EndStream: true})
		})
		if err != errMalformedH2 {
			t.Errorf("%s: %s passed the filter (%v)", bad.Name, bad.Value, err)
		}
	}

	var want []byte
	out, err = framesThrough(t, func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
		for _, hf := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":path", Value: "/"}, {Name: "te", Value: "trailers"}, {Name: "x-a", Value: "1"}} {
			_ = enc.WriteField(hf)
		}
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true, PadLength: 3})
		_ = fr.WriteData(1, true, []byte("hello"))
	})
	if err != nil {
		t.Fatal(err)
	}
	var in bytes.Buffer
	in.WriteString(http2ClientPreface)
	fr2 := http2.NewFramer(&in, nil)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, hf := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":path", Value: "/"}, {Name: "te", Value: "trailers"}, {Name: "x-a", Value: "1"}} {
		_ = enc.WriteField(hf)
	}
	_ = fr2.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true, PadLength: 3})
	_ = fr2.WriteData(1, true, []byte("hello"))
	want = in.Bytes()
	if !bytes.Equal(out, want) {
		t.Errorf("valid frames changed:\n got %x\nwant %x", out, want)
	}
}

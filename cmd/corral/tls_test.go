package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// writeCert writes a fresh self-signed certificate for 127.0.0.1 with the
// given serial number to dir/cert.pem and dir/key.pem, in place.
func writeCert(t *testing.T, dir string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "corral test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// servedSerial makes a new TLS connection to addr and returns the serial
// number of the certificate it is served (0 when the handshake fails).
func servedSerial(addr string) int64 {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return 0
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

const tlsWeb = `
listen       = "{public}"
worker_ports = "{ports}"
admin { listen = "{admin}" }
proxy {
  tls {
    cert = "{dir}/certs/cert.pem"
    key  = "{dir}/certs/key.pem"
  }
}
app "web" {
  command   = ["{testapp}"]
  instances = 1
}
`

func startTLSWeb(t *testing.T) (*corralProc, string) {
	t.Helper()
	c := prepareCorral(t)
	certs := filepath.Join(c.dir, "certs")
	if err := os.Mkdir(certs, 0o755); err != nil {
		t.Fatal(err)
	}
	writeCert(t, certs, 1)
	c.writeConfig(tlsWeb)
	c.start()
	c.waitReady(30 * time.Second)
	if got := servedSerial(c.public); got != 1 {
		t.Fatalf("serial %d served at start, want 1", got)
	}
	return c, certs
}

func TestRenewedCertificateIsServedAfterSIGHUPAndReload(t *testing.T) {
	c, certs := startTLSWeb(t)

	writeCert(t, certs, 2) // renewed in place; config.hcl unchanged
	c.signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "certificate 2 served after SIGHUP", func() bool { return servedSerial(c.public) == 2 })

	writeCert(t, certs, 3)
	resp, err := http.Post("http://"+c.admin+"/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /reload: %d", resp.StatusCode)
	}
	if got := servedSerial(c.public); got != 3 {
		t.Fatalf("serial %d served after POST /reload, want 3", got)
	}
}

func TestRenewedCertificateIsServedWithoutASignal(t *testing.T) {
	c, certs := startTLSWeb(t)
	writeCert(t, certs, 2) // in place, in a directory config.hcl is not in
	waitFor(t, 10*time.Second, "certificate 2 served without a signal", func() bool { return servedSerial(c.public) == 2 })
}

package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/scalpel-dev/scalpel/internal/audit"
	"github.com/scalpel-dev/scalpel/internal/config"
)

// TestHTTPWebConfig: with http.web_config_file, serve's endpoints speak TLS only and answer only
// a user the file names, with its password; a password changed in the file takes effect on the
// next request, without a restart. A file scalpel cannot use is refused by the configuration's
// check, which names the setting.
func TestHTTPWebConfig(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	webFile := filepath.Join(dir, "web.yaml")
	writeWebConfig := func(password string) {
		t.Helper()
		hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		y := fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  sre: %s\n", certFile, keyFile, hash)
		if err := os.WriteFile(webFile, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeWebConfig("first")

	cfg := config.Default()
	cfg.HTTP.WebConfigFile = webFile
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a valid web configuration file is refused: %v", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := serveHTTP(ln, webFile, httpHandler(prometheus.NewRegistry(), audit.Reader{}), slog.New(slog.DiscardHandler))
	t.Cleanup(func() { _ = srv.Close() })
	addr := ln.Addr().String()

	tlsClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(c *http.Client, url, user, pass string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	https := "https://" + addr
	for _, tc := range []struct {
		name, path, user, pass string
		want                   int
	}{
		{name: "no credentials", path: "/metrics", want: http.StatusUnauthorized},
		{name: "wrong password", path: "/api/v1/", user: "sre", pass: "guess", want: http.StatusUnauthorized},
		{name: "unknown user", path: "/healthz", user: "root", pass: "first", want: http.StatusUnauthorized},
		{name: "the user", path: "/metrics", user: "sre", pass: "first", want: http.StatusOK},
		{name: "the user, the API", path: "/api/v1/", user: "sre", pass: "first", want: http.StatusOK},
		{name: "the user, health", path: "/healthz", user: "sre", pass: "first", want: http.StatusOK},
	} {
		if got := get(tlsClient, https+tc.path, tc.user, tc.pass); got != tc.want {
			t.Errorf("%s: GET %s answered %d, want %d", tc.name, tc.path, got, tc.want)
		}
	}
	// Plain HTTP gets no answer but the TLS server's refusal.
	if got := get(&http.Client{Timeout: 5 * time.Second}, "http://"+addr+"/metrics", "sre", "first"); got != http.StatusBadRequest {
		t.Errorf("plain HTTP answered %d, want %d", got, http.StatusBadRequest)
	}

	writeWebConfig("second")
	if got := get(tlsClient, https+"/metrics", "sre", "first"); got != http.StatusUnauthorized {
		t.Errorf("the old password after it changed: %d, want %d", got, http.StatusUnauthorized)
	}
	if got := get(tlsClient, https+"/metrics", "sre", "second"); got != http.StatusOK {
		t.Errorf("the new password: %d, want %d", got, http.StatusOK)
	}

	for name, body := range map[string]string{
		"a password in clear":  "basic_auth_users:\n  sre: first\n",
		"a missing key file":   fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n", certFile, filepath.Join(dir, "nokey.pem")),
		"an unknown field":     "tls_server_confg: {}\n",
		"a file that is empty": "",
	} {
		cfg.HTTP.WebConfigFile = writeFile(t, dir, "bad.yaml", body)
		err := cfg.Validate()
		if name == "a file that is empty" {
			if err != nil {
				t.Errorf("%s: %v (an empty file is plain HTTP)", name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "http.web_config_file") {
			t.Errorf("%s: Validate = %v, want an error naming http.web_config_file", name, err)
		}
	}
	cfg.HTTP.WebConfigFile = filepath.Join(dir, "absent.yaml")
	if err := cfg.Validate(); err == nil {
		t.Error("a web configuration file that does not exist passed the check")
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key under dir, and returns their paths
// and a pool that trusts the certificate.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "scalpel test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestClearPasswordsWarning: serve warns when users log in without TLS on an address beyond this
// host, and only then.
func TestClearPasswordsWarning(t *testing.T) {
	dir := t.TempDir()
	users := writeFile(t, dir, "users.yaml", "basic_auth_users:\n  sre: $2y$04$abcdefghijklmnopqrstuu5xFJJkQzZ8q0j7z8gYQk8W0y8mJbq6i\n")
	tlsUsers := writeFile(t, dir, "tls.yaml", "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\nbasic_auth_users:\n  sre: x\n")
	noUsers := writeFile(t, dir, "nousers.yaml", "http_server_config:\n  http2: false\n")
	for _, tc := range []struct {
		addr, file string
		warn       bool
	}{
		{addr: "0.0.0.0:8080", file: users, warn: true},
		{addr: "10.1.2.3:8080", file: users, warn: true},
		{addr: ":8080", file: users, warn: true},
		{addr: "127.0.0.1:8080", file: users},
		{addr: "[::1]:8080", file: users},
		{addr: "localhost:8080", file: users},
		{addr: "0.0.0.0:8443", file: tlsUsers},
		{addr: "0.0.0.0:8080", file: noUsers},
		{addr: "0.0.0.0:8080", file: ""},
	} {
		got := clearPasswords(tc.addr, tc.file)
		if (got != "") != tc.warn {
			t.Errorf("clearPasswords(%q, %s) = %q, want a warning: %v", tc.addr, filepath.Base(tc.file), got, tc.warn)
		}
	}
}

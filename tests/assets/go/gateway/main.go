// Command gateway is a small Go AI gateway for llmprobe's end-to-end tests: standard library
// only, an HTTPS reverse proxy (httputil.ReverseProxy, streaming flushed at once) that forwards
// every request to an upstream over TLS, HTTP/1.1 on both sides.
//
//	gateway -upstream https://localhost:PORT -ca upstream-cert.pem -cert cert.pem -key key.pem
//
// Prints "LISTENING <port>" once it accepts connections.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
)

func main() {
	upstream := flag.String("upstream", "", "upstream base URL")
	ca := flag.String("ca", "", "PEM file to trust for the upstream")
	cert := flag.String("cert", "", "server certificate")
	key := flag.String("key", "", "server key")
	flag.Parse()
	u, err := url.Parse(*upstream)
	if err != nil {
		fail(err)
	}
	pem, err := os.ReadFile(*ca)
	if err != nil {
		fail(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.FlushInterval = -1
	proxy.Transport = &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: false,
		TLSNextProto:      map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	base := proxy.Director
	proxy.Director = func(r *http.Request) {
		base(r)
		r.Host = u.Host
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	srv := &http.Server{
		Handler:      proxy,
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	fmt.Printf("LISTENING %d\n", ln.Addr().(*net.TCPAddr).Port)
	if err := srv.ServeTLS(ln, *cert, *key); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gateway:", err)
	os.Exit(1)
}

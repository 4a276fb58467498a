// Command client is a small Go LLM client for llmprobe's end-to-end tests: standard library
// only, it POSTs /v1/chat/completions like the Python openai SDK does (same JSON body), over
// HTTP/1.1 on one keep-alive connection (HTTP/2 with -http2, where the server offers h2 by
// ALPN), and prints one JSON line at the end, with the protocol each call used.
//
//	client -base-url https://localhost:PORT/v1 -ca cert.pem [-model M] [-stream]
//	       [-include-usage] [-calls N] [-wait-file PATH] [-delay-ms N] [-http2]
//
// API key: env OPENAI_API_KEY. With -wait-file the client (and its TLS config) is built,
// "WAITING" is printed, and the file is polled until it exists. -delay-ms waits before the
// first call (a process that calls at once may run before a probe is attached to it).
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

type call struct {
	Status    int     `json:"status"`
	Stream    bool    `json:"stream"`
	Chunks    int     `json:"chunks"`
	Model     string  `json:"model"`
	RequestID string  `json:"request_id"`
	Content   string  `json:"content"`
	TTFTms    float64 `json:"ttft_ms"`
	Proto     string  `json:"proto"`
}

func main() {
	base := flag.String("base-url", "", "base URL (.../v1)")
	ca := flag.String("ca", "", "PEM file to trust")
	model := flag.String("model", "test-model", "model")
	stream := flag.Bool("stream", false, "stream")
	usage := flag.Bool("include-usage", false, "stream_options.include_usage")
	calls := flag.Int("calls", 1, "sequential calls")
	wait := flag.String("wait-file", "", "wait for this file before the first call")
	prompt := flag.String("prompt", "Say hello to the test server", "prompt")
	delay := flag.Int("delay-ms", 0, "wait before the first call")
	h2 := flag.Bool("http2", false, "HTTP/2 when the server offers it (ALPN h2)")
	flag.Parse()

	cfg := &tls.Config{}
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			fail(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		cfg.RootCAs = pool
	}
	tr := &http.Transport{
		TLSClientConfig:   cfg,
		ForceAttemptHTTP2: false,
		// A non-nil empty map: HTTP/1.1 only.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	if *h2 {
		// net/http's default: h2 by ALPN, HTTP/1.1 otherwise.
		tr = &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	}
	client := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	if *wait != "" {
		fmt.Println("WAITING")
		for {
			if _, err := os.Stat(*wait); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(time.Duration(*delay) * time.Millisecond)
	var out []call
	for i := 0; i < *calls; i++ {
		out = append(out, chat(client, *base, *model, *prompt, *stream, *usage))
	}
	b, _ := json.Marshal(map[string]any{"pid": os.Getpid(), "calls": out})
	fmt.Println(string(b))
}

func chat(client *http.Client, base, model, prompt string, stream, usage bool) call {
	body := map[string]any{
		"messages": []map[string]string{{"role": "user", "content": prompt}},
		"model":    model,
	}
	if stream {
		body["stream"] = true
		if usage {
			body["stream_options"] = map[string]bool{"include_usage": true}
		}
	}
	raw, _ := json.Marshal(body)
	req, err := http.NewRequest("POST", base+"/chat/completions", bytes.NewReader(raw))
	if err != nil {
		fail(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+os.Getenv("OPENAI_API_KEY"))
	t0 := time.Now()
	res, err := client.Do(req)
	if err != nil {
		fail(err)
	}
	defer res.Body.Close()
	c := call{Status: res.StatusCode, Stream: stream, RequestID: res.Header.Get("x-request-id"), Proto: res.Proto}
	if !stream {
		var v struct {
			Model   string `json:"model"`
			Choices []struct {
				Message struct {
					Content string `json:"content"`
				} `json:"message"`
			} `json:"choices"`
		}
		if err := json.NewDecoder(res.Body).Decode(&v); err != nil {
			fail(err)
		}
		c.Model = v.Model
		if len(v.Choices) > 0 {
			c.Content = v.Choices[0].Message.Content
		}
		return c
	}
	sc := bufio.NewScanner(res.Body)
	var sb strings.Builder
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "data: ") {
			continue
		}
		data := strings.TrimPrefix(line, "data: ")
		if data == "[DONE]" {
			break
		}
		var v struct {
			Model   string `json:"model"`
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(data), &v); err != nil {
			fail(err)
		}
		c.Model = v.Model
		if len(v.Choices) > 0 && v.Choices[0].Delta.Content != "" {
			if c.Chunks == 0 {
				c.TTFTms = float64(time.Since(t0).Microseconds()) / 1000
			}
			c.Chunks++
			sb.WriteString(v.Choices[0].Delta.Content)
		}
	}
	// Drain the body so the connection is reused.
	_, _ = io.Copy(io.Discard, res.Body)
	c.Content = sb.String()
	return c
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "client:", err)
	os.Exit(1)
}

/* A TLS client that makes one LLM call as soon as it starts (bench_first_calls.py): it waits
 * DELAY_MS after main() (0: none), connects to 127.0.0.1:PORT, does the TLS handshake (no
 * certificate check), sends one non-streamed chat completion and reads the answer, then prints
 * "pid ok" or "pid failed". OpenSSL's prototypes are declared here, so no headers are needed:
 *   cc -O2 -o first_call first_call.c /path/libssl.so.3 /path/libcrypto.so.3
 * Usage: first_call PORT DELAY_MS */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_method_st SSL_METHOD;
const SSL_METHOD *TLS_client_method(void);
SSL_CTX *SSL_CTX_new(const SSL_METHOD *);
SSL *SSL_new(SSL_CTX *);
int SSL_set_fd(SSL *, int);
int SSL_connect(SSL *);
int SSL_write(SSL *, const void *, int);
int SSL_read(SSL *, void *, int);
int SSL_shutdown(SSL *);
void SSL_free(SSL *);

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: first_call PORT DELAY_MS\n");
        return 2;
    }
    int port = atoi(argv[1]);
    long delay = atol(argv[2]);
    if (delay > 0) {
        struct timespec ts = {delay / 1000, (delay % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        printf("%d failed\n", getpid());
        return 1;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        printf("%d failed\n", getpid());
        return 1;
    }
    const char *body = "{\"model\":\"first-call\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    char req[512];
    int n = snprintf(req, sizeof req,
                     "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
                     "Content-Type: application/json\r\nAuthorization: Bearer sk-first\r\n"
                     "Connection: close\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    if (SSL_write(ssl, req, n) != n) {
        printf("%d failed\n", getpid());
        return 1;
    }
    char buf[4096];
    long got = 0;
    int r;
    while ((r = SSL_read(ssl, buf, sizeof buf)) > 0)
        got += r;
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
    printf("%d %s\n", getpid(), got > 0 ? "ok" : "failed");
    return got > 0 ? 0 : 1;
}

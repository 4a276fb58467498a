/* A streaming chat call over TLS with OpenSSL linked statically (tests/tls_stacks.rs).
 *
 *   openssl_static_client PORT CA_FILE REQUEST_FILE [GO_FILE]
 *       sends the request, prints the response; with GO_FILE, first prints "waiting" and waits
 *       until GO_FILE exists (the test lets the agent find the executable first)
 *   openssl_static_client --wait
 *       prints "ready" and waits (for doctor)
 *
 * Built with `cc -static ... -lssl -lcrypto` (Debian's libssl.a/libcrypto.a): SSL_read and
 * SSL_write live in the executable, with their symbols unless the build is stripped. The
 * request file holds the whole HTTP request; the server closes after it (Connection: close). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "openssl_static_client: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--wait") == 0) {
        /* Touch OpenSSL so that the linker keeps it, then wait. */
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        printf("ready\n");
        fflush(stdout);
        pause();
        SSL_CTX_free(ctx);
        return 0;
    }
    if (argc != 4 && argc != 5) die("usage: PORT CA_FILE REQUEST_FILE [GO_FILE] | --wait");
    if (argc == 5) {
        struct stat st;
        printf("waiting\n");
        fflush(stdout);
        for (int i = 0; i < 6000 && stat(argv[4], &st) != 0; i++) usleep(10000);
    }
    char req[65536];
    FILE *f = fopen(argv[3], "rb");
    if (!f) die("cannot open the request file");
    size_t n = fread(req, 1, sizeof req, f);
    fclose(f);

    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) die("SSL_CTX_new");
    if (SSL_CTX_load_verify_locations(ctx, argv[2], NULL) != 1) die("loading the CA");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)atoi(argv[1]));
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) die("connect");

    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    SSL_set1_host(ssl, "localhost");
    if (SSL_connect(ssl) != 1) die("TLS handshake");
    size_t off = 0;
    while (off < n) {
        int w = SSL_write(ssl, req + off, (int)(n - off));
        if (w <= 0) die("SSL_write");
        off += (size_t)w;
    }
    char buf[16384];
    int r;
    while ((r = SSL_read(ssl, buf, sizeof buf)) > 0) fwrite(buf, 1, (size_t)r, stdout);
    fflush(stdout);
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    return 0;
}

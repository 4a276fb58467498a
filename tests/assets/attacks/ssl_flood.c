/* ssl_flood LIB COUNT GOFILE: loads LIB (fake_ssl.c), prints READY, waits for GOFILE to exist,
 * then calls SSL_write COUNT times, each with a new invented SSL object and the start of an LLM
 * request that never ends: a million fake TLS connections. Prints DONE. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: ssl_flood LIB COUNT GOFILE\n"); return 2; }
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    int (*w)(void *, const void *, int) = (int (*)(void *, const void *, int))dlsym(h, "SSL_write");
    if (!w) { fprintf(stderr, "no SSL_write\n"); return 1; }
    long n = atol(argv[2]);
    printf("READY\n");
    fflush(stdout);
    struct stat st;
    while (stat(argv[3], &st) != 0) usleep(10000);
    const char *req = "POST /v1/chat/completions HTTP/1.1\r\nHost: flood\r\n"
                      "Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
                      "{\"model\":\"flood\",\"messages\":[";
    int len = (int)strlen(req);
    for (long i = 0; i < n; i++) w((void *)(0x100000L + i * 16), req, len);
    printf("DONE\n");
    fflush(stdout);
    return 0;
}

/* A streaming chat call with Debian's GnuTLS build of libcurl (libcurl-gnutls.so.4, package
 * libcurl3-gnutls) (tests/tls_stacks.rs).
 *
 *   curl_gnutls_client URL CA_FILE BODY AUTHORIZATION_HEADER
 *
 * Linked against the library file itself (no development headers needed): the few libcurl
 * functions and option numbers used are declared here, as curl/curl.h defines them. */
#include <stdio.h>
#include <string.h>

typedef void CURL;
struct curl_slist;
extern int curl_global_init(long flags);
extern CURL *curl_easy_init(void);
extern int curl_easy_setopt(CURL *curl, int option, ...);
extern int curl_easy_perform(CURL *curl);
extern void curl_easy_cleanup(CURL *curl);
extern struct curl_slist *curl_slist_append(struct curl_slist *list, const char *s);
extern const char *curl_easy_strerror(int code);

#define CURL_GLOBAL_DEFAULT 3L
#define CURLOPT_FAILONERROR 45
#define CURLOPT_HTTP_VERSION 84
#define CURLOPT_URL 10002
#define CURLOPT_POSTFIELDS 10015
#define CURLOPT_HTTPHEADER 10023
#define CURLOPT_CAINFO 10065
#define CURLOPT_WRITEFUNCTION 20011
#define CURL_HTTP_VERSION_1_1 2L

static size_t write_out(char *data, size_t size, size_t n, void *user) {
    (void)user;
    fwrite(data, size, n, stdout);
    fflush(stdout);
    return size * n;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: URL CA_FILE BODY AUTHORIZATION_HEADER\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *c = curl_easy_init();
    if (!c) return 1;
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, "content-type: application/json");
    h = curl_slist_append(h, argv[4]);
    curl_easy_setopt(c, CURLOPT_URL, argv[1]);
    curl_easy_setopt(c, CURLOPT_CAINFO, argv[2]);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, argv[3]);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_out);
    int rc = curl_easy_perform(c);
    if (rc != 0) fprintf(stderr, "curl_easy_perform: %s\n", curl_easy_strerror(rc));
    curl_easy_cleanup(c);
    return rc == 0 ? 0 : 1;
}

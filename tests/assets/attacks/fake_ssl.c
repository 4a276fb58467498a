/* A library that exports OpenSSL's I/O symbols and moves no bytes: what a hostile local user can
 * load to make llmprobe place its uprobes on it, then call with invented SSL objects. */
#include <stddef.h>
#include <string.h>

int SSL_write(void *ssl, const void *buf, int num) { (void)ssl; (void)buf; return num; }
int SSL_write_ex(void *ssl, const void *buf, size_t num, size_t *written) {
    (void)ssl; (void)buf; *written = num; return 1;
}
int SSL_read(void *ssl, void *buf, int num) { (void)ssl; memset(buf, 'x', (size_t)num); return num; }
int SSL_read_ex(void *ssl, void *buf, size_t num, size_t *read) {
    (void)ssl; memset(buf, 'x', num); *read = num; return 1;
}
void SSL_free(void *ssl) { (void)ssl; }

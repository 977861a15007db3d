/*
 * config_tls.c - the TLS certificate and key checks of the config module.
 * See config_internal.h.
 *
 * The files are checked here, with OpenSSL, before anything else starts: lws
 * would refuse them only when it creates the vhost, after the migrations,
 * with OpenSSL's error code for a message. Here the message names the
 * setting and the file and says what to do. None quotes a file's contents.
 *
 * Threads: the main thread, at start-up (OpenSSL's error queue is per thread).
 */
#include "config_internal.h"

#include "jw_error.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* OpenSSL's reason for the newest error on this thread's queue, which is then emptied. */
static const char *openssl_reason(void)
{
    const char *r = ERR_reason_error_string(ERR_peek_last_error());

    ERR_clear_error();
    return r ? r : "unknown error";
}

/* Opens path for reading; a FIFO or device would block or never end, so only regular files. */
static FILE *open_regular(const char *path, const char *name, char *err, size_t errlen)
{
    struct stat st;
    FILE *fp;

    if (!*path) {
        jw_errorf(err, errlen, JW_ECONFIG, "%s is empty; give the path of a PEM file", name);
        return NULL;
    }
    fp = fopen(path, "re");
    if (!fp) {
        jw_errorf(err, errlen, JW_ECONFIG, "%s: cannot read %s: %s", name, path, strerror(errno));
        return NULL;
    }
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        jw_errorf(err, errlen, JW_ECONFIG, "%s: %s is not a regular file", name, path);
        return NULL;
    }
    return fp;
}

static void record_expiry(jw_config *c, const X509 *leaf)
{
    const ASN1_TIME *na = X509_get0_notAfter(leaf);
    struct tm tm;

    c->tls_not_after[0] = '\0';
    if (ASN1_TIME_to_tm(na, &tm) == 1)
        strftime(c->tls_not_after, sizeof(c->tls_not_after), "%Y-%m-%d %H:%M:%S UTC", &tm);
    c->tls_expired = X509_cmp_current_time(na) < 0;
}

int config__parse_tls_cert(jw_config *c, const char *v, const char *name, char *err, size_t errlen)
{
    FILE *fp = open_regular(v, name, err, errlen);
    X509 *leaf;

    if (!fp)
        return JW_ECONFIG;
    leaf = PEM_read_X509(fp, NULL, NULL, NULL);
    fclose(fp);
    if (!leaf) {
        ERR_clear_error();
        return jw_errorf(err, errlen, JW_ECONFIG,
                         "%s: %s holds no PEM certificate (a -----BEGIN CERTIFICATE----- block)",
                         name, v);
    }
    record_expiry(c, leaf);
    X509_free(leaf);
    config__replace_str(&c->tls_cert, v);
    return 0;
}

/* OpenSSL asks for a passphrase only when the key is encrypted: refuse, never prompt. */
static int no_passphrase(char *buf, int size, int rwflag, void *asked)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    if (asked)
        *(bool *)asked = true;
    return 0;
}

int config__parse_tls_key(jw_config *c, const char *v, const char *name, char *err, size_t errlen)
{
    FILE *fp = open_regular(v, name, err, errlen);
    bool asked = false;
    EVP_PKEY *key;

    if (!fp)
        return JW_ECONFIG;
    key = PEM_read_PrivateKey(fp, NULL, no_passphrase, &asked);
    fclose(fp);
    if (!key) {
        ERR_clear_error();
        if (asked)
            return jw_errorf(
                err, errlen, JW_ECONFIG,
                "%s: the private key in %s is protected by a passphrase; jobwire needs "
                "it unencrypted: openssl pkey -in %s -out key.pem, then chmod 600 key.pem",
                name, v, v);
        return jw_errorf(err, errlen, JW_ECONFIG,
                         "%s: %s holds no PEM private key (a -----BEGIN PRIVATE KEY----- block, or "
                         "BEGIN EC/RSA PRIVATE KEY)",
                         name, v);
    }
    EVP_PKEY_free(key);
    config__replace_str(&c->tls_key, v);
    return 0;
}

static bool key_mismatch(unsigned long e)
{
    return ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH;
}

/*
 * Both files or neither; then what lws will do with them, on a scratch
 * SSL_CTX: load the chain (this also applies OpenSSL's security level, e.g.
 * refuses a 1024-bit RSA key) and the key, and check that they belong
 * together.
 */
int config__check_tls(const jw_config *c, char *err, size_t errlen)
{
    SSL_CTX *ctx;
    int rc = 0;

    if (!c->tls_cert && !c->tls_key)
        return 0;
    if (!c->tls_key)
        return jw_errorf(
            err, errlen, JW_ECONFIG,
            "--tls-cert (JOBWIRE_TLS_CERT) is set but --tls-key (JOBWIRE_TLS_KEY) is not: "
            "give both, the certificate and its private key, or neither for plain HTTP");
    if (!c->tls_cert)
        return jw_errorf(
            err, errlen, JW_ECONFIG,
            "--tls-key (JOBWIRE_TLS_KEY) is set but --tls-cert (JOBWIRE_TLS_CERT) is not: "
            "give both, the certificate and its private key, or neither for plain HTTP");

    ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return jw_errorf(err, errlen, JW_ECONFIG, "cannot set up TLS: %s", openssl_reason());
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
    if (SSL_CTX_use_certificate_chain_file(ctx, c->tls_cert) != 1)
        rc = jw_errorf(err, errlen, JW_ECONFIG, "TLS: cannot use the certificate chain in %s: %s",
                       c->tls_cert, openssl_reason());
    else if (SSL_CTX_use_PrivateKey_file(ctx, c->tls_key, SSL_FILETYPE_PEM) != 1 &&
             !key_mismatch(ERR_peek_last_error()))
        rc = jw_errorf(err, errlen, JW_ECONFIG,
                       "TLS: cannot use the private key in %s with the certificate in %s: %s",
                       c->tls_key, c->tls_cert, openssl_reason());
    else if (SSL_CTX_check_private_key(ctx) != 1)
        /* Also where a mismatch ends up when use_PrivateKey_file already saw it. */
        rc = jw_errorf(
            err, errlen, JW_ECONFIG,
            "TLS: the private key in %s does not belong to the certificate in %s; give the "
            "key the certificate was issued for",
            c->tls_key, c->tls_cert);
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return rc;
}

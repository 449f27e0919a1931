/*
 * Cryptographic primitives over OpenSSL 3 (see dp/crypto.h).
 *
 * dp_mac precomputes HMAC-SHA256's inner and outer digest states for its key,
 * so each blob id costs two EVP_MD_CTX copies and the hashing itself (SHA-NI
 * on this CPU). dp_aead keeps one initialised AES-256-GCM context per key and
 * only changes the nonce per message. Neither is shared between threads.
 */
#include "dp/crypto.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "dp/error.h"

int dp_random(void *out, size_t len)
{
	if (RAND_bytes(out, (int)len) != 1)
		return dp_error_set(DP_ERROR, "the random number generator failed");
	return 0;
}

void dp_wipe(void *p, size_t len)
{
	if (p)
		OPENSSL_cleanse(p, len);
}

int dp_sha256(uint8_t out[DP_HASH_LEN], const void *data, size_t len)
{
	unsigned int n = 0;
	if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1)
		return dp_error_set(DP_ERROR, "sha256 failed");
	return 0;
}

struct dp_mac {
	EVP_MD_CTX *inner, *outer, *work;
};

int dp_mac_new(dp_mac **out, const uint8_t key[DP_KEY_LEN])
{
	uint8_t ipad[64], opad[64];
	dp_mac *m = calloc(1, sizeof(*m));
	if (!m)
		return dp_error_set(DP_ERROR, "out of memory");
	m->inner = EVP_MD_CTX_new();
	m->outer = EVP_MD_CTX_new();
	m->work = EVP_MD_CTX_new();
	int ok = m->inner && m->outer && m->work;
	memset(ipad, 0x36, sizeof(ipad));
	memset(opad, 0x5c, sizeof(opad));
	for (int i = 0; i < DP_KEY_LEN; i++) {
		ipad[i] ^= key[i];
		opad[i] ^= key[i];
	}
	ok = ok && EVP_DigestInit_ex(m->inner, EVP_sha256(), NULL) == 1 &&
	     EVP_DigestUpdate(m->inner, ipad, sizeof(ipad)) == 1 &&
	     EVP_DigestInit_ex(m->outer, EVP_sha256(), NULL) == 1 &&
	     EVP_DigestUpdate(m->outer, opad, sizeof(opad)) == 1;
	dp_wipe(ipad, sizeof(ipad));
	dp_wipe(opad, sizeof(opad));
	if (!ok) {
		dp_mac_free(m);
		return dp_error_set(DP_ERROR, "hmac-sha256 setup failed");
	}
	*out = m;
	return 0;
}

int dp_mac_compute(dp_mac *m, uint8_t out[DP_HASH_LEN], const void *data, size_t len)
{
	uint8_t h[DP_HASH_LEN];
	unsigned int n = 0;
	int ok = EVP_MD_CTX_copy_ex(m->work, m->inner) == 1 &&
	         EVP_DigestUpdate(m->work, data, len) == 1 &&
	         EVP_DigestFinal_ex(m->work, h, &n) == 1 &&
	         EVP_MD_CTX_copy_ex(m->work, m->outer) == 1 &&
	         EVP_DigestUpdate(m->work, h, sizeof(h)) == 1 &&
	         EVP_DigestFinal_ex(m->work, out, &n) == 1;
	return ok ? 0 : dp_error_set(DP_ERROR, "hmac-sha256 failed");
}

void dp_mac_free(dp_mac *m)
{
	if (!m)
		return;
	/* The contexts hold key-derived state; EVP_MD_CTX_free cleanses it. */
	EVP_MD_CTX_free(m->inner);
	EVP_MD_CTX_free(m->outer);
	EVP_MD_CTX_free(m->work);
	free(m);
}

struct dp_aead {
	EVP_CIPHER_CTX *enc, *dec;
};

int dp_aead_new(dp_aead **out, const uint8_t key[DP_KEY_LEN])
{
	dp_aead *a = calloc(1, sizeof(*a));
	if (!a)
		return dp_error_set(DP_ERROR, "out of memory");
	a->enc = EVP_CIPHER_CTX_new();
	a->dec = EVP_CIPHER_CTX_new();
	int ok = a->enc && a->dec &&
	         EVP_EncryptInit_ex(a->enc, EVP_aes_256_gcm(), NULL, key, NULL) == 1 &&
	         EVP_DecryptInit_ex(a->dec, EVP_aes_256_gcm(), NULL, key, NULL) == 1;
	if (!ok) {
		dp_aead_free(a);
		return dp_error_set(DP_ERROR, "aes-256-gcm setup failed");
	}
	*out = a;
	return 0;
}

int dp_aead_seal(dp_aead *a, uint8_t *out, const void *in, size_t len, const void *ad, size_t adlen)
{
	int n = 0;
	if (len > INT32_MAX)
		return dp_error_set(DP_ERROR, "message too large to seal (%zu bytes)", len);
	int rc = dp_random(out, DP_NONCE_LEN);
	if (rc)
		return rc;
	uint8_t *ct = out + DP_NONCE_LEN;
	int ok = EVP_EncryptInit_ex(a->enc, NULL, NULL, NULL, out) == 1 &&
	         (adlen == 0 || EVP_EncryptUpdate(a->enc, NULL, &n, ad, (int)adlen) == 1) &&
	         EVP_EncryptUpdate(a->enc, ct, &n, in, (int)len) == 1 &&
	         EVP_EncryptFinal_ex(a->enc, ct + n, &n) == 1 &&
	         EVP_CIPHER_CTX_ctrl(a->enc, EVP_CTRL_GCM_GET_TAG, DP_TAG_LEN, ct + len) == 1;
	return ok ? 0 : dp_error_set(DP_ERROR, "aes-256-gcm encryption failed");
}

int dp_aead_open(dp_aead *a, uint8_t *out, const void *in, size_t len, const void *ad, size_t adlen)
{
	int n = 0;
	if (len < DP_SEAL_OVERHEAD || len > INT32_MAX)
		return DP_ECORRUPT;
	const uint8_t *p = in;
	size_t ctlen = len - DP_SEAL_OVERHEAD;
	uint8_t tag[DP_TAG_LEN];
	memcpy(tag, p + DP_NONCE_LEN + ctlen, DP_TAG_LEN);
	if (EVP_DecryptInit_ex(a->dec, NULL, NULL, NULL, p) != 1 ||
	    (adlen && EVP_DecryptUpdate(a->dec, NULL, &n, ad, (int)adlen) != 1) ||
	    EVP_DecryptUpdate(a->dec, out, &n, p + DP_NONCE_LEN, (int)ctlen) != 1 ||
	    EVP_CIPHER_CTX_ctrl(a->dec, EVP_CTRL_GCM_SET_TAG, DP_TAG_LEN, tag) != 1)
		return DP_ECORRUPT;
	if (EVP_DecryptFinal_ex(a->dec, out + n, &n) != 1) {
		/* Do not hand out unauthenticated plaintext. */
		dp_wipe(out, ctlen);
		return DP_ECORRUPT;
	}
	return 0;
}

void dp_aead_free(dp_aead *a)
{
	if (!a)
		return;
	EVP_CIPHER_CTX_free(a->enc); /* cleanses the key schedule */
	EVP_CIPHER_CTX_free(a->dec);
	free(a);
}

/* OpenSSL's allocations, with one addition: a block of 8 MiB or more
 * (scrypt's 32 MiB) is advised onto transparent huge pages, which takes its
 * first touch from ~8,000 page faults to a few dozen and the key derivation
 * from ~0.20 to ~0.12 s, paid by every process that opens a repository.
 * Installed before OpenSSL allocates anything. */
#define HUGE_PAGE (2u << 20)
#define HUGE_MIN (8u << 20)

static void *ossl_malloc(size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	void *p = malloc(n);
	if (p && n >= HUGE_MIN) {
		uintptr_t a = ((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
		uintptr_t e = ((uintptr_t)p + n) & ~(uintptr_t)(HUGE_PAGE - 1);
		if (e > a)
			(void)madvise((void *)a, e - a, MADV_HUGEPAGE); /* advice only */
	}
	return p;
}

static void *ossl_realloc(void *p, size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	return realloc(p, n);
}

static void ossl_free(void *p, const char *file, int line)
{
	(void)file;
	(void)line;
	free(p);
}

__attribute__((constructor)) static void ossl_mem_install(void)
{
	CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free);
}

int dp_scrypt(uint8_t *out, size_t outlen, const char *pass, size_t passlen, const uint8_t *salt,
              size_t saltlen, uint64_t n, uint32_t r, uint32_t p)
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL);
	EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	OSSL_PARAM params[] = {
	    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD, (void *)pass, passlen),
	    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, saltlen),
	    OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n),
	    OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r),
	    OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &p),
	    OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM,
	                                &(uint64_t){1024ull * 1024 * 1024}),
	    OSSL_PARAM_construct_end(),
	};
	int ok = ctx && EVP_KDF_derive(ctx, out, outlen, params) == 1;
	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
	return ok ? 0 : dp_error_set(DP_ERROR, "scrypt key derivation failed");
}

int dp_hkdf_sha256(uint8_t *out, size_t outlen, const uint8_t *ikm, size_t ikmlen,
                   const uint8_t *salt, size_t saltlen, const void *info, size_t infolen)
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	OSSL_PARAM params[] = {
	    OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0),
	    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikmlen),
	    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, saltlen),
	    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, infolen),
	    OSSL_PARAM_construct_end(),
	};
	int ok = ctx && EVP_KDF_derive(ctx, out, outlen, params) == 1;
	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
	return ok ? 0 : dp_error_set(DP_ERROR, "hkdf key derivation failed");
}

void dp_hex(char *hex_out, const uint8_t *data, size_t len)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < len; i++) {
		hex_out[2 * i] = digits[data[i] >> 4];
		hex_out[2 * i + 1] = digits[data[i] & 15];
	}
	hex_out[2 * len] = 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int dp_unhex(uint8_t *out, size_t outlen, const char *hex)
{
	if (strlen(hex) != 2 * outlen)
		return DP_ECORRUPT;
	for (size_t i = 0; i < outlen; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return DP_ECORRUPT;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

int dp_base64_encode(dp_buf *out, const void *data, size_t len)
{
	size_t need = 4 * ((len + 2) / 3);
	int rc = dp_buf_reserve(out, need);
	if (rc)
		return rc;
	int n = EVP_EncodeBlock(out->data + out->len, data, (int)len);
	out->len += (size_t)n;
	out->data[out->len] = 0;
	return 0;
}

int dp_base64_decode(dp_buf *out, const char *text)
{
	size_t len = strlen(text);
	if (len % 4)
		return DP_ECORRUPT;
	int rc = dp_buf_reserve(out, len / 4 * 3);
	if (rc)
		return rc;
	int n = EVP_DecodeBlock(out->data + out->len, (const unsigned char *)text, (int)len);
	if (n < 0)
		return DP_ECORRUPT;
	/* EVP_DecodeBlock counts padding as output bytes. */
	if (len >= 1 && text[len - 1] == '=')
		n--;
	if (len >= 2 && text[len - 2] == '=')
		n--;
	out->len += (size_t)n;
	out->data[out->len] = 0;
	return 0;
}

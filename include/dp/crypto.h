/*
 * Cryptographic primitives over OpenSSL 3, with no OpenSSL type exposed.
 *
 * AES-256-GCM with a 12-byte random nonce and a 16-byte tag; sealed layout:
 *   nonce(12) | ciphertext | tag(16)          (DP_SEAL_OVERHEAD = 28 bytes)
 * Keys are 32 bytes. A dp_aead/dp_mac context is used by one thread at a time;
 * make one per thread. Key material is wiped on free.
 */
#ifndef DP_CRYPTO_H
#define DP_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "dp/buf.h"

#define DP_KEY_LEN 32
#define DP_HASH_LEN 32
#define DP_NONCE_LEN 12
#define DP_TAG_LEN 16
#define DP_SEAL_OVERHEAD (DP_NONCE_LEN + DP_TAG_LEN)

int dp_random(void *out, size_t len);
void dp_wipe(void *p, size_t len); /* not optimised away */

/* SHA-256 of data. */
int dp_sha256(uint8_t out[DP_HASH_LEN], const void *data, size_t len);

/* Keyed hash (HMAC-SHA256) with the key's pads precomputed once. */
typedef struct dp_mac dp_mac;
int dp_mac_new(dp_mac **out, const uint8_t key[DP_KEY_LEN]);
int dp_mac_compute(dp_mac *m, uint8_t out[DP_HASH_LEN], const void *data, size_t len);
void dp_mac_free(dp_mac *m);

/* BLAKE3 keyed hash of data (common/blake3.c): AVX-512 when the CPU has it.
 * The _portable variant never uses SIMD (for tests). Always returns 0. */
int dp_blake3_keyed(uint8_t out[DP_HASH_LEN], const uint8_t key[DP_KEY_LEN], const void *data,
                    size_t len);
int dp_blake3_keyed_portable(uint8_t out[DP_HASH_LEN], const uint8_t key[DP_KEY_LEN],
                             const void *data, size_t len);
/* The same hash of n inputs at once, out[i] of data[i] (len[i] bytes): the
 * digests of n calls of dp_blake3_keyed, faster for inputs of a few dozen
 * KiB because their 1 KiB chunks share the 16 lanes. */
int dp_blake3_keyed_many(uint8_t (*out)[DP_HASH_LEN], const uint8_t key[DP_KEY_LEN],
                         const uint8_t *const *data, const size_t *len, size_t n);
int dp_blake3_keyed_many_portable(uint8_t (*out)[DP_HASH_LEN], const uint8_t key[DP_KEY_LEN],
                                  const uint8_t *const *data, const size_t *len, size_t n);

/* AES-256-GCM. */
typedef struct dp_aead dp_aead;
int dp_aead_new(dp_aead **out, const uint8_t key[DP_KEY_LEN]);
/* out must have room for len + DP_SEAL_OVERHEAD bytes. */
int dp_aead_seal(dp_aead *a, uint8_t *out, const void *in, size_t len, const void *ad,
                 size_t adlen);
/* in is nonce|ct|tag (len >= DP_SEAL_OVERHEAD); out has room for
 * len - DP_SEAL_OVERHEAD bytes. DP_ECORRUPT if authentication fails (no
 * message is set: the caller names the object). */
int dp_aead_open(dp_aead *a, uint8_t *out, const void *in, size_t len, const void *ad,
                 size_t adlen);
void dp_aead_free(dp_aead *a);

/* scrypt key derivation. */
int dp_scrypt(uint8_t *out, size_t outlen, const char *pass, size_t passlen, const uint8_t *salt,
              size_t saltlen, uint64_t n, uint32_t r, uint32_t p);
/* HKDF-SHA256 (RFC 5869, OpenSSL's): outlen bytes from ikm, salt and info. */
int dp_hkdf_sha256(uint8_t *out, size_t outlen, const uint8_t *ikm, size_t ikmlen,
                   const uint8_t *salt, size_t saltlen, const void *info, size_t infolen);

/* Hex and base64 helpers. hex_out has room for 2*len+1. */
void dp_hex(char *hex_out, const uint8_t *data, size_t len);
int dp_unhex(uint8_t *out, size_t outlen, const char *hex); /* exact length */
/* Appends the base64 text (no newlines, NUL-terminated outside len). */
int dp_base64_encode(dp_buf *out, const void *data, size_t len);
/* Appends the decoded bytes; DP_ECORRUPT on bad input. */
int dp_base64_decode(dp_buf *out, const char *text);

#endif

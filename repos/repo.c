/*
 * Repository handle: init, open (config + key unlock), sealed objects and
 * small files. The format is described in format.h.
 *
 * The master keys live in dp_repo.master for the handle's life and are wiped
 * in dp_repo_free. The passphrase is borrowed and never copied.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "dp/backend.h"
#include "dp/error.h"
#include "dp/log.h"
#include "format.h"
#include "keyslot.h"

/* scrypt cost: N=2^15, r=8, p=1 takes ~32 MiB and ~0.1 s, the usual
 * interactive choice. */
#define KDF_N (1u << 15)
#define KDF_R 8u
#define KDF_P 1u
#define KDF_SALT_LEN 32

static void host_name(char *out, size_t cap)
{
	if (gethostname(out, cap) != 0)
		snprintf(out, cap, "unknown");
	out[cap - 1] = 0;
}

static void rfc3339_now(char out[32])
{
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int dp_repo_nthreads(const dp_repo *r)
{
	if (r->threads > 0)
		return r->threads;
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (int)(n > 64 ? 64 : n) : 1;
}

/* ---- sealed objects ---- */

static int object_ad(char *ad, size_t cap, const char *type)
{
	int n = snprintf(ad, cap, "dp-object:%s", type);
	return (n < 0 || (size_t)n >= cap) ? -1 : n;
}

/* Index, snapshot and pack-header plaintexts are stored compressed: besides
 * the chunk ids (random) they hold lengths and offsets that repeat. They
 * begin with a flag byte: 0 raw, 1 a zstd frame (format.h). */
static bool compressed_type(const char *type)
{
	return strcmp(type, "index") == 0 || strcmp(type, "snapshot") == 0 ||
	       strcmp(type, "pack-header") == 0;
}

/* Largest plaintext accepted from a compressed object (a snapshot of a
 * 16 TiB stream at 8 KiB chunks). */
#define OBJECT_PLAIN_MAX (80ull << 30)

int dp_object_seal(dp_repo *r, dp_aead *a, const char *type, const void *plain, size_t len,
                   dp_buf *out)
{
	char ad[600];
	dp_buf z = {0};
	int adlen = object_ad(ad, sizeof(ad), type);
	if (adlen < 0)
		return dp_error_set(DP_EUSAGE, "object type too long");
	int rc = 0;
	if (compressed_type(type)) {
		size_t bound = ZSTD_compressBound(len);
		if ((rc = dp_buf_reserve(&z, 1 + bound)))
			return rc;
		size_t c = ZSTD_compress(z.data + 1, bound, plain, len, 1);
		if (!ZSTD_isError(c) && c < len) {
			z.data[0] = 1;
			z.len = 1 + c;
		} else {
			z.data[0] = 0;
			memcpy(z.data + 1, plain, len);
			z.len = 1 + len;
		}
		plain = z.data;
		len = z.len;
	}
	if ((rc = dp_buf_reserve(out, len + DP_SEAL_OVERHEAD)))
		goto out;
	rc = dp_aead_seal(a ? a : r->aead, out->data + out->len, plain, len, ad, (size_t)adlen);
	if (!rc)
		out->len += len + DP_SEAL_OVERHEAD;
out:
	dp_buf_free(&z);
	return rc;
}

int dp_object_open(dp_repo *r, dp_aead *a, const char *type, const char *key, const uint8_t *sealed,
                   size_t len, dp_buf *out)
{
	char ad[600];
	dp_buf z = {0};
	int adlen = object_ad(ad, sizeof(ad), type);
	if (adlen < 0)
		return dp_error_set(DP_EUSAGE, "object type too long");
	if (len < DP_SEAL_OVERHEAD)
		return dp_error_set(DP_ECORRUPT, "object \"%s\" is truncated (%zu bytes)", key,
		                    len);
	bool comp = compressed_type(type);
	dp_buf *dst = comp ? &z : out;
	int rc = dp_buf_reserve(dst, len - DP_SEAL_OVERHEAD);
	if (rc)
		goto out;
	rc = dp_aead_open(a ? a : r->aead, dst->data + dst->len, sealed, len, ad, (size_t)adlen);
	if (rc) {
		rc = dp_error_set(DP_ECORRUPT,
		                  "object \"%s\" failed authentication: it is corrupted or was "
		                  "altered",
		                  key);
		goto out;
	}
	dst->len += len - DP_SEAL_OVERHEAD;
	if (comp) {
		unsigned long long n = z.len > 1 && z.data[0] == 1
		                           ? ZSTD_getFrameContentSize(z.data + 1, z.len - 1)
		                           : z.len - 1;
		if (z.len < 1 || z.data[0] > 1 || n == ZSTD_CONTENTSIZE_ERROR ||
		    n == ZSTD_CONTENTSIZE_UNKNOWN || n > OBJECT_PLAIN_MAX) {
			rc = dp_error_set(DP_ECORRUPT, "object \"%s\" is malformed", key);
			goto out;
		}
		if ((rc = dp_buf_reserve(out, (size_t)n)))
			goto out;
		if (z.data[0] == 0) {
			memcpy(out->data + out->len, z.data + 1, (size_t)n);
		} else {
			size_t d =
			    ZSTD_decompress(out->data + out->len, (size_t)n, z.data + 1, z.len - 1);
			if (ZSTD_isError(d) || d != n) {
				rc = dp_error_set(DP_ECORRUPT, "object \"%s\" is malformed", key);
				goto out;
			}
		}
		out->len += (size_t)n;
	}
	out->data[out->len] = 0;
out:
	dp_buf_free(&z);
	return rc;
}

int dp_object_read(dp_repo *r, const char *type, const char *key, dp_buf *plain)
{
	dp_buf raw = {0};
	uint8_t h[DP_HASH_LEN];
	char hex[DP_ID_HEX];
	int rc = dp_backend_get_all(r->b, key, &raw);
	if (rc)
		goto out;
	const char *slash = strrchr(key, '/');
	if ((rc = dp_sha256(h, raw.data, raw.len)))
		goto out;
	dp_hex(hex, h, sizeof(h));
	if (!slash || strcmp(slash + 1, hex) != 0) {
		rc = dp_error_set(
		    DP_ECORRUPT,
		    "object \"%s\" does not match its id (its content hashes to %.16s...): "
		    "it is corrupted",
		    key, hex);
		goto out;
	}
	rc = dp_object_open(r, NULL, type, key, raw.data, raw.len, plain);
out:
	dp_buf_free(&raw);
	return rc;
}

int dp_object_write(dp_repo *r, const char *type, const char *dir, const void *plain, size_t len,
                    char id_out[DP_ID_HEX], uint64_t *bytes_out)
{
	dp_buf sealed = {0};
	uint8_t h[DP_HASH_LEN];
	char key[300];
	int rc = dp_object_seal(r, NULL, type, plain, len, &sealed);
	if (rc)
		goto out;
	if ((rc = dp_sha256(h, sealed.data, sealed.len)))
		goto out;
	dp_hex(id_out, h, sizeof(h));
	snprintf(key, sizeof(key), "%s/%s", dir, id_out);
	if ((rc = r->b->put(r->b, key, sealed.data, sealed.len)))
		goto out;
	if (bytes_out)
		*bytes_out += sealed.len;
out:
	dp_buf_free(&sealed);
	return rc;
}

/* ---- config ---- */

static int config_encode(const dp_repo *r, dp_buf *out)
{
	return dp_buf_appendf(out,
	                      "{\"version\":%d,\"id\":\"%s\",\"chunker\":{\"min\":%u,\"avg\":%u,"
	                      "\"max\":%u},\"packSize\":%u,\"compression\":{\"algorithm\":\"zstd\","
	                      "\"level\":%d},\"encryption\":\"aes-256-gcm\",\"blobId\":\"blake3-"
	                      "keyed\"}\n",
	                      DP_FORMAT_VERSION, r->id, r->chunk_min, r->chunk_avg, r->chunk_max,
	                      r->pack_size, r->zstd_level);
}

static int json_uint(const cJSON *o, const char *name, uint32_t *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 4294967295.0)
		return -1;
	*out = (uint32_t)v->valuedouble;
	return 0;
}

/* The limits on chunking, pack and compression parameters, for init and
 * open alike. */
static int check_params(const dp_repo *r)
{
	if (r->chunk_min < 64 || r->chunk_min > r->chunk_avg || r->chunk_avg > r->chunk_max ||
	    r->chunk_max > 64u * 1024 * 1024 || (r->chunk_avg & (r->chunk_avg - 1)) != 0)
		return dp_error_set(
		    DP_EUSAGE,
		    "chunk sizes must satisfy 64 <= min <= avg <= max <= 64 MiB with "
		    "avg a power of two (got %u/%u/%u)",
		    r->chunk_min, r->chunk_avg, r->chunk_max);
	if (r->pack_size < r->chunk_max || r->pack_size > 1024u * 1024 * 1024)
		return dp_error_set(
		    DP_EUSAGE, "pack size %u must be between the maximum chunk size (%u) and 1 GiB",
		    r->pack_size, r->chunk_max);
	if (r->zstd_level < DP_ZSTD_LEVEL_MIN || r->zstd_level > DP_ZSTD_LEVEL_MAX)
		return dp_error_set(DP_EUSAGE, "zstd level %d is out of range (%d..%d)",
		                    r->zstd_level, DP_ZSTD_LEVEL_MIN, DP_ZSTD_LEVEL_MAX);
	return 0;
}

static int config_decode(dp_repo *r, const char *text)
{
	int rc = DP_ECORRUPT;
	cJSON *c = cJSON_Parse(text);
	const cJSON *ver = cJSON_GetObjectItemCaseSensitive(c, "version");
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(c, "id");
	const cJSON *ch = cJSON_GetObjectItemCaseSensitive(c, "chunker");
	const cJSON *comp = cJSON_GetObjectItemCaseSensitive(c, "compression");
	if (!c || !cJSON_IsNumber(ver) || !cJSON_IsString(id) || strlen(id->valuestring) != 64)
		goto bad;
	if (ver->valueint > DP_FORMAT_VERSION) {
		rc = dp_error_set(DP_ERROR,
		                  "repository format version %d is not supported by this dp "
		                  "(it reads version %d): use a newer dp",
		                  ver->valueint, DP_FORMAT_VERSION);
		goto out;
	}
	if (ver->valueint < DP_FORMAT_VERSION) {
		rc = dp_error_set(DP_ERROR,
		                  "repository format version %d was written by an older dp; this "
		                  "one reads version %d only: read it with the dp that wrote it",
		                  ver->valueint, DP_FORMAT_VERSION);
		goto out;
	}
	const cJSON *bid = cJSON_GetObjectItemCaseSensitive(c, "blobId");
	if (!cJSON_IsString(bid) || strcmp(bid->valuestring, "blake3-keyed") != 0)
		goto bad;
	const cJSON *level = cJSON_GetObjectItemCaseSensitive(comp, "level");
	if (json_uint(ch, "min", &r->chunk_min) || json_uint(ch, "avg", &r->chunk_avg) ||
	    json_uint(ch, "max", &r->chunk_max) || json_uint(c, "packSize", &r->pack_size) ||
	    !cJSON_IsNumber(level))
		goto bad;
	r->zstd_level = level->valueint;
	/* The config is not authenticated: hold it to the bounds init enforces,
	 * so a tampered one cannot make us allocate without limit. */
	if (check_params(r) != 0)
		goto bad;
	r->cut_min = r->chunk_min;
	r->cut_avg = r->chunk_avg;
	r->cut_max = r->chunk_max;
	memcpy(r->id, id->valuestring, DP_ID_HEX);
	rc = 0;
	goto out;
bad:
	rc = dp_error_set(DP_ECORRUPT, "repository config is malformed");
out:
	cJSON_Delete(c);
	return rc;
}

/* ---- keys ---- */

/* A key is bound to its repository: its associated data names the id, so a
 * key left by an interrupted init of another repository never unlocks this
 * one. */
static void key_ad(char ad[100], const char *repo_id)
{
	snprintf(ad, 100, "dp-object:key:%s", repo_id);
}

static int key_wrap(const char *pass, const uint8_t master[DP_MASTER_LEN], const char *repo_id,
                    dp_buf *out)
{
	uint8_t salt[KDF_SALT_LEN], wrap[DP_KEY_LEN], sealed[DP_MASTER_LEN + DP_SEAL_OVERHEAD];
	char now[32], host[256];
	dp_aead *a = NULL;
	dp_buf b64salt = {0}, b64data = {0};
	int rc = dp_random(salt, sizeof(salt));
	if (rc)
		goto out;
	if ((rc = dp_scrypt(wrap, sizeof(wrap), pass, strlen(pass), salt, sizeof(salt), KDF_N,
	                    KDF_R, KDF_P)))
		goto out;
	if ((rc = dp_aead_new(&a, wrap)))
		goto out;
	char ad[100];
	key_ad(ad, repo_id);
	if ((rc = dp_aead_seal(a, sealed, master, DP_MASTER_LEN, ad, strlen(ad))))
		goto out;
	if ((rc = dp_base64_encode(&b64salt, salt, sizeof(salt))) ||
	    (rc = dp_base64_encode(&b64data, sealed, sizeof(sealed))))
		goto out;
	rfc3339_now(now);
	host_name(host, sizeof(host));
	rc = dp_buf_appendf(out,
	                    "{\"kdf\":\"scrypt\",\"N\":%u,\"r\":%u,\"p\":%u,\"salt\":\"%s\","
	                    "\"data\":\"%s\",\"created\":\"%s\",\"host\":\"%s\"}\n",
	                    KDF_N, KDF_R, KDF_P, (char *)b64salt.data, (char *)b64data.data, now,
	                    host);
out:
	dp_wipe(wrap, sizeof(wrap));
	dp_aead_free(a);
	dp_buf_free(&b64salt);
	dp_buf_free(&b64data);
	return rc;
}

/* Returns 0 and fills master if pass opens this key file, DP_EAUTH if not. */
static int key_unwrap(const char *pass, const char *text, const char *key, const char *repo_id,
                      uint8_t master[DP_MASTER_LEN])
{
	int rc = DP_ECORRUPT;
	cJSON *k = cJSON_Parse(text);
	dp_buf salt = {0}, data = {0};
	uint8_t wrap[DP_KEY_LEN];
	dp_aead *a = NULL;
	const cJSON *n = cJSON_GetObjectItemCaseSensitive(k, "N");
	const cJSON *r = cJSON_GetObjectItemCaseSensitive(k, "r");
	const cJSON *p = cJSON_GetObjectItemCaseSensitive(k, "p");
	const cJSON *s = cJSON_GetObjectItemCaseSensitive(k, "salt");
	const cJSON *d = cJSON_GetObjectItemCaseSensitive(k, "data");
	const cJSON *kdf = cJSON_GetObjectItemCaseSensitive(k, "kdf");
	if (cJSON_IsString(kdf) && strcmp(kdf->valuestring, "scrypt") != 0) {
		rc = DP_EAUTH; /* a random-key slot (keyslot.c): no passphrase opens it */
		goto out;
	}
	if (!cJSON_IsNumber(n) || !cJSON_IsNumber(r) || !cJSON_IsNumber(p) || !cJSON_IsString(s) ||
	    !cJSON_IsString(d) || n->valuedouble < 2 || n->valuedouble > (1 << 22) ||
	    r->valuedouble < 1 || r->valuedouble > 32 || p->valuedouble < 1 || p->valuedouble > 16)
		goto bad;
	if (dp_base64_decode(&salt, s->valuestring) || dp_base64_decode(&data, d->valuestring) ||
	    data.len != DP_MASTER_LEN + DP_SEAL_OVERHEAD)
		goto bad;
	if ((rc = dp_scrypt(wrap, sizeof(wrap), pass, strlen(pass), salt.data, salt.len,
	                    (uint64_t)n->valuedouble, (uint32_t)r->valuedouble,
	                    (uint32_t)p->valuedouble)))
		goto out;
	if ((rc = dp_aead_new(&a, wrap)))
		goto out;
	char ad[100];
	key_ad(ad, repo_id);
	rc = dp_aead_open(a, master, data.data, data.len, ad, strlen(ad)) ? DP_EAUTH : 0;
	goto out;
bad:
	rc = dp_error_set(DP_ECORRUPT, "key object \"%s\" is malformed", key);
out:
	dp_wipe(wrap, sizeof(wrap));
	dp_aead_free(a);
	dp_buf_free(&salt);
	dp_buf_free(&data);
	cJSON_Delete(k);
	return rc;
}

/* ---- init / open ---- */

static int repo_setup(dp_repo *r)
{
	dp_chunker_gear(r->gear, dp_repo_chunk_seed(r));
	host_name(r->host, sizeof(r->host));
	return dp_aead_new(&r->aead, dp_repo_enc_key(r));
}

int dp_repo_init_backend(dp_backend *b, const dp_repo_init_opts *opts, const char *passphrase,
                         char id_out[DP_ID_HEX])
{
	dp_repo r = {.b = b};
	dp_buf cfg = {0}, key = {0};
	uint8_t rid[DP_HASH_LEN], kid[DP_HASH_LEN];
	char kkey[80], khex[DP_ID_HEX];
	uint64_t size;
	dp_keylist keys = {0};
	dp_repo_init_opts o = opts ? *opts : (dp_repo_init_opts){0};
	int rc;

	if (!passphrase || !passphrase[0]) {
		rc = dp_error_set(DP_EUSAGE, "an empty passphrase is not allowed");
		goto out;
	}
	if (o.chunk_avg) {
		r.chunk_avg = o.chunk_avg;
		r.chunk_min = o.chunk_min ? o.chunk_min : r.chunk_avg / 4;
		r.chunk_max = o.chunk_max ? o.chunk_max : r.chunk_avg * 4;
	} else {
		r.chunk_min = DP_DEFAULT_CHUNK_MIN;
		r.chunk_avg = DP_DEFAULT_CHUNK_AVG;
		r.chunk_max = DP_DEFAULT_CHUNK_MAX;
	}
	r.pack_size = o.pack_size ? o.pack_size : DP_DEFAULT_PACK_SIZE;
	r.zstd_level = o.zstd_level ? o.zstd_level : DP_DEFAULT_ZSTD_LEVEL;
	if ((rc = check_params(&r)))
		goto out;
	rc = b->stat(b, "config", &size);
	if (rc == 0) {
		rc = dp_error_set(DP_EEXIST,
		                  "a repository already exists there; nothing was changed");
		goto out;
	}
	if (rc != DP_ENOTFOUND)
		goto out;
	dp_error_clear();
	/* keys/ without a config is an init that did not finish (the key goes
	 * first): refuse rather than leave two master keys behind. */
	if (b->create && (rc = b->create(b)))
		goto out;
	if ((rc = b->list(b, "keys/", dp_keylist_add, &keys)))
		goto out;
	if (keys.n) {
		rc = dp_error_set(DP_EEXIST,
		                  "there is an unfinished repository there (\"%s\" but no config): "
		                  "remove it or choose another location; nothing was changed",
		                  keys.v[0]);
		goto out;
	}
	if ((rc = dp_random(rid, sizeof(rid))) || (rc = dp_random(r.master, sizeof(r.master))) ||
	    (rc = dp_random(kid, sizeof(kid))))
		goto out;
	dp_hex(r.id, rid, sizeof(rid));
	if ((rc = key_wrap(passphrase, r.master, r.id, &key)))
		goto out;
	dp_hex(khex, kid, sizeof(kid));
	snprintf(kkey, sizeof(kkey), "keys/%s", khex);
	/* The key first: a config without a key would be a repository nobody can
	 * open; a key without a config is just an unfinished init. */
	if ((rc = b->put(b, kkey, key.data, key.len)))
		goto out;
	if ((rc = config_encode(&r, &cfg)) || (rc = b->put(b, "config", cfg.data, cfg.len)))
		goto out;
	if (id_out)
		memcpy(id_out, r.id, DP_ID_HEX);
out:
	dp_wipe(r.master, sizeof(r.master));
	dp_buf_free(&cfg);
	dp_buf_free(&key);
	dp_keylist_free(&keys);
	return rc;
}

int dp_repo_init(const char *url, const dp_backend_opts *bopts, const dp_repo_init_opts *opts,
                 const char *passphrase, char id_out[DP_ID_HEX])
{
	dp_backend *b = NULL;
	int rc = dp_backend_open(&b, url, bopts);
	if (rc)
		return rc;
	rc = dp_repo_init_backend(b, opts, passphrase, id_out);
	b->free(b);
	return rc;
}

/* Tries the passphrase on every scrypt key object (the dp_repo_unlock_fn of
 * dp_repo_open_backend). */
static int passphrase_unlock(dp_repo *r, void *arg)
{
	const char *passphrase = arg;
	dp_backend *b = r->b;
	dp_buf kt = {0};
	dp_keylist keys = {0};
	int rc;
	if ((rc = b->list(b, "keys/", dp_keylist_add, &keys)))
		goto out;
	if (keys.n == 0) {
		rc = dp_error_set(DP_ECORRUPT, "repository has no key objects under keys/");
		goto out;
	}
	rc = DP_EAUTH;
	for (size_t i = 0; i < keys.n && rc == DP_EAUTH; i++) {
		dp_buf_reset(&kt);
		if ((rc = dp_backend_get_all(b, keys.v[i], &kt)))
			goto out;
		rc = key_unwrap(passphrase ? passphrase : "", (const char *)kt.data, keys.v[i],
		                r->id, r->master);
		if (rc == DP_ECORRUPT) {
			/* One malformed key file must not lock out the others. */
			dp_warn("%s; trying the other keys", dp_error_last());
			rc = DP_EAUTH;
		}
	}
	if (rc == DP_EAUTH)
		rc = dp_error_set(DP_EAUTH, "wrong passphrase for this repository");
out:
	dp_buf_wipe(&kt);
	dp_keylist_free(&keys);
	return rc;
}

int dp_repo_open_backend(dp_repo **out, dp_backend *b, const char *passphrase)
{
	return dp_repo_open_unlock(out, b, passphrase_unlock, (void *)passphrase);
}

int dp_repo_open_unlock(dp_repo **out, dp_backend *b, dp_repo_unlock_fn unlock, void *arg)
{
	dp_repo *r = calloc(1, sizeof(*r));
	dp_buf cfg = {0};
	int rc;
	if (!r) {
		b->free(b);
		return dp_error_set(DP_ERROR, "out of memory");
	}
	r->b = b;
	if ((rc = dp_backend_get_all(b, "config", &cfg))) {
		if (rc == DP_ENOTFOUND)
			rc = dp_error_set(DP_ENOTFOUND,
			                  "no repository there (no config object): create one with "
			                  "'dp repo init'");
		goto out;
	}
	if ((rc = config_decode(r, (const char *)cfg.data)))
		goto out;
	if ((rc = unlock(r, arg)))
		goto out;
	rc = repo_setup(r);
out:
	dp_buf_free(&cfg);
	if (rc) {
		dp_repo_free(r);
		return rc;
	}
	*out = r;
	return 0;
}

int dp_repo_open(dp_repo **out, const char *url, const dp_backend_opts *bopts,
                 const char *passphrase)
{
	dp_backend *b = NULL;
	int rc = dp_backend_open(&b, url, bopts);
	if (rc)
		return rc;
	return dp_repo_open_backend(out, b, passphrase);
}

void dp_repo_free(dp_repo *r)
{
	if (!r)
		return;
	if (r->b)
		r->b->free(r->b);
	dp_aead_free(r->aead);
	dp_wipe(r->master, sizeof(r->master));
	dp_wipe(r->gear, sizeof(r->gear));
	free(r);
}

const char *dp_repo_id(const dp_repo *r)
{
	return r->id;
}

dp_backend *dp_repo_backend(dp_repo *r)
{
	return r->b;
}

void dp_repo_set_threads(dp_repo *r, int n)
{
	r->threads = n < 0 ? 0 : n;
}

void dp_repo_set_zstd_level(dp_repo *r, int level)
{
	r->zstd_level = level;
}

int dp_repo_set_chunk_avg(dp_repo *r, uint32_t avg)
{
	if (avg == 0) {
		r->cut_min = r->chunk_min;
		r->cut_avg = r->chunk_avg;
		r->cut_max = r->chunk_max;
		return 0;
	}
	if (avg < 1024 || (avg & (avg - 1)) != 0)
		return dp_error_set(DP_EUSAGE,
		                    "chunk average %u is not a power of two of at least 1K", avg);
	if ((uint64_t)avg * 4 > r->chunk_max)
		return dp_error_set(DP_EUSAGE,
		                    "chunk average %u needs chunks up to %u bytes, but this "
		                    "repository was made with a chunk maximum of %u (dp repo init "
		                    "--chunk-max): use an average of at most %u",
		                    avg, avg * 4, r->chunk_max, r->chunk_max / 4);
	r->cut_min = avg / 4;
	r->cut_avg = avg;
	r->cut_max = avg * 4;
	return 0;
}

void dp_repo_set_lock_wait(dp_repo *r, int seconds)
{
	r->lock_wait = seconds < 0 ? 0 : seconds;
}

void dp_repo_set_progress(dp_repo *r, dp_progress *p)
{
	r->progress = p;
}

/* ---- small sealed files ---- */

static int file_key_ok(const char *key)
{
	static const char *reserved[] = {"config", "keys/",      "data/",
	                                 "index/", "snapshots/", "locks/"};
	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
		if (strncmp(key, reserved[i], strlen(reserved[i])) == 0)
			return dp_error_set(DP_EUSAGE,
			                    "\"%s\" is reserved for the repository format", key);
	if (!key[0] || key[0] == '/' || strstr(key, "..") || strstr(key, "//") || strlen(key) > 512)
		return dp_error_set(DP_EUSAGE, "bad file name \"%s\"", key);
	return 0;
}

int dp_repo_put_file(dp_repo *r, const char *key, const void *data, size_t len)
{
	char type[600];
	dp_buf sealed = {0};
	int rc = file_key_ok(key);
	if (rc)
		return rc;
	snprintf(type, sizeof(type), "file:%s", key);
	if (!(rc = dp_object_seal(r, NULL, type, data, len, &sealed)))
		rc = r->b->put(r->b, key, sealed.data, sealed.len);
	dp_buf_free(&sealed);
	return rc;
}

int dp_repo_get_file(dp_repo *r, const char *key, dp_buf *out)
{
	char type[600];
	dp_buf sealed = {0};
	int rc = file_key_ok(key);
	if (rc)
		return rc;
	snprintf(type, sizeof(type), "file:%s", key);
	if (!(rc = dp_backend_get_all(r->b, key, &sealed)))
		rc = dp_object_open(r, NULL, type, key, sealed.data, sealed.len, out);
	dp_buf_free(&sealed);
	return rc;
}

int dp_repo_remove_file(dp_repo *r, const char *key)
{
	int rc = file_key_ok(key);
	return rc ? rc : r->b->remove(r->b, key);
}

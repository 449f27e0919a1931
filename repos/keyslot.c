/*
 * Key slots: random keys that open a repository without its passphrase.
 *
 * Every object under keys/ wraps the same master keys (format.h). A
 * passphrase slot derives its wrapping key with scrypt (repo.c). A random
 * slot, made here, derives it from a 256-bit random secret with HKDF:
 *
 *   keys/<slot id>   plaintext JSON:
 *     {"kdf":"hkdf-sha256", "salt":"<b64, 32 bytes>",
 *      "data":"<b64 sealed(wrap key, master, ad)>",
 *      "label":"<what it is for>", "created":"<RFC 3339>", "host":"..."}
 *   wrap key = HKDF-SHA256(ikm = secret, salt,
 *                          info = "dp-keyslot-v1:<repo id>:<slot id>"), 32 bytes
 *   ad       = "dp-object:keyslot:<repo id>:<slot id>"
 *   the key given to its holder ("token", never stored in the repository):
 *     "dpk1-" <slot id, 64 hex> "-" <secret, 64 hex>
 *
 * Why HKDF and not scrypt: scrypt's cost exists to slow down guessing a
 * human passphrase from a stolen keys/ object. A secret of 256 uniformly
 * random bits cannot be guessed (2^256 tries), so stretching adds nothing;
 * HKDF only turns it into a wrapping key bound to this repository and this
 * slot (a slot object copied to another repository or renamed does not
 * open). That takes microseconds instead of scrypt's ~0.1 s and 32 MiB, which
 * is what a process started per WAL segment (archive_command) can afford.
 *
 * What a slot changes for the holder of its key: it opens this repository
 * (the same master keys as the passphrase, so the same power over its data),
 * nothing else — the passphrase, which may guard other repositories, is not
 * derivable from it. Removing the slot (dp_keyslot_remove) revokes the key
 * for every later open. It does not rotate the master keys: a holder who
 * kept a copy of the unwrapped master keys can still decrypt what they
 * could before; rotating them means a new repository.
 *
 * The token names its slot, so opening reads the config and one key object:
 * no listing, no scrypt. A passphrase open skips random slots (repo.c).
 *
 * Thread safety: as dp_repo (one caller at a time). Secrets on the stack are
 * wiped before returning.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dp/backend.h"
#include "dp/error.h"
#include "format.h"
#include "keyslot.h"

#define SLOT_KDF "hkdf-sha256"
#define TOKEN_PREFIX "dpk1-"
#define SALT_LEN 32
#define LABEL_MAX 199

/* The slot's wrapping key: HKDF-SHA256 (RFC 5869) of the secret. */
static int hkdf_sha256(uint8_t out[DP_KEY_LEN], const uint8_t ikm[DP_KEY_LEN],
                       const uint8_t salt[SALT_LEN], const char *info)
{
	return dp_hkdf_sha256(out, DP_KEY_LEN, ikm, DP_KEY_LEN, salt, SALT_LEN, info, strlen(info));
}

static void slot_info_str(char *out, size_t cap, const char *repo_id, const char *slot_id)
{
	snprintf(out, cap, "dp-keyslot-v1:%s:%s", repo_id, slot_id);
}

static void slot_ad(char *out, size_t cap, const char *repo_id, const char *slot_id)
{
	snprintf(out, cap, "dp-object:keyslot:%s:%s", repo_id, slot_id);
}

static bool is_hex64(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* Splits a token into slot id (hex) and secret (wiped by the caller). */
static int token_parse(const char *token, char id[DP_ID_HEX], uint8_t secret[DP_KEY_LEN], int code)
{
	const size_t pl = strlen(TOKEN_PREFIX);
	if (!token || strlen(token) != DP_KEYSLOT_TOKEN_LEN - 1 ||
	    strncmp(token, TOKEN_PREFIX, pl) != 0 || token[pl + 64] != '-' ||
	    !is_hex64(token + pl, 64) || !is_hex64(token + pl + 65, 64))
		return dp_error_set(code,
		                    "the repository key is malformed (expected \"dpk1-\" and two "
		                    "groups of 64 hex digits, as 'dp-worker key-add' writes it)");
	memcpy(id, token + pl, 64);
	id[64] = 0;
	if (secret && dp_unhex(secret, DP_KEY_LEN, token + pl + 65) != 0)
		return dp_error_set(code, "the repository key is malformed");
	return 0;
}

int dp_keyslot_token_id(const char *token, char id_out[DP_ID_HEX])
{
	return token_parse(token, id_out, NULL, DP_EUSAGE);
}

static void now_rfc3339(char out[32])
{
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- open with a slot key ---- */

typedef struct slot_open {
	char id[DP_ID_HEX];
	uint8_t secret[DP_KEY_LEN];
} slot_open;

static int slot_unlock(dp_repo *r, void *arg)
{
	slot_open *so = arg;
	char key[80], info[200], ad[200];
	uint8_t wrap[DP_KEY_LEN];
	dp_buf text = {0}, salt = {0}, data = {0};
	dp_aead *a = NULL;
	cJSON *j = NULL;
	snprintf(key, sizeof(key), "keys/%s", so->id);
	int rc = dp_backend_get_all(r->b, key, &text);
	if (rc == DP_ENOTFOUND) {
		rc = dp_error_set(DP_EAUTH,
		                  "repository key %.16s... has been revoked or belongs to another "
		                  "repository (no \"%s\"): make a new one with 'dp-worker key-add'",
		                  so->id, key);
		goto out;
	}
	if (rc)
		goto out;
	j = cJSON_Parse((const char *)text.data);
	const cJSON *kdf = cJSON_GetObjectItemCaseSensitive(j, "kdf");
	const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "salt");
	const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "data");
	if (!cJSON_IsString(kdf) || strcmp(kdf->valuestring, SLOT_KDF) != 0) {
		rc = dp_error_set(DP_EAUTH,
		                  "\"%s\" is not a random-key slot: open it with the "
		                  "passphrase",
		                  key);
		goto out;
	}
	if (!cJSON_IsString(s) || !cJSON_IsString(d) || dp_base64_decode(&salt, s->valuestring) ||
	    dp_base64_decode(&data, d->valuestring) || salt.len != SALT_LEN ||
	    data.len != DP_MASTER_LEN + DP_SEAL_OVERHEAD) {
		rc = dp_error_set(DP_ECORRUPT, "key object \"%s\" is malformed", key);
		goto out;
	}
	slot_info_str(info, sizeof(info), r->id, so->id);
	if ((rc = hkdf_sha256(wrap, so->secret, salt.data, info)) || (rc = dp_aead_new(&a, wrap)))
		goto out;
	slot_ad(ad, sizeof(ad), r->id, so->id);
	if (dp_aead_open(a, r->master, data.data, data.len, ad, strlen(ad)) != 0)
		rc = dp_error_set(DP_EAUTH, "wrong repository key for slot %.16s...", so->id);
out:
	dp_wipe(wrap, sizeof(wrap));
	dp_aead_free(a);
	cJSON_Delete(j);
	dp_buf_free(&text);
	dp_buf_free(&salt);
	dp_buf_free(&data);
	return rc;
}

int dp_repo_open_key_backend(dp_repo **out, dp_backend *b, const char *token)
{
	slot_open so;
	/* A malformed key is a wrong credential (exit 3), like a wrong one. */
	int rc = token_parse(token, so.id, so.secret, DP_EAUTH);
	if (rc) {
		b->free(b);
	} else {
		rc = dp_repo_open_unlock(out, b, slot_unlock, &so);
	}
	dp_wipe(&so, sizeof(so));
	return rc;
}

int dp_repo_open_key(dp_repo **out, const char *url, const dp_backend_opts *bopts,
                     const char *token)
{
	dp_backend *b = NULL;
	int rc = dp_backend_open(&b, url, bopts);
	if (rc)
		return rc;
	return dp_repo_open_key_backend(out, b, token);
}

/* ---- add ---- */

int dp_keyslot_add(dp_repo *r, const char *label, char token_out[DP_KEYSLOT_TOKEN_LEN],
                   char id_out[DP_ID_HEX])
{
	uint8_t sid[DP_HASH_LEN], secret[DP_KEY_LEN], salt[SALT_LEN], wrap[DP_KEY_LEN];
	uint8_t sealed[DP_MASTER_LEN + DP_SEAL_OVERHEAD];
	char id[DP_ID_HEX], shex[2 * DP_KEY_LEN + 1], key[80], info[200], ad[200], now[32];
	char host[256];
	dp_buf b64salt = {0}, b64data = {0};
	dp_aead *a = NULL;
	cJSON *j = NULL;
	char *text = NULL;
	int rc = 0;
	if (!label)
		label = "";
	size_t ll = strlen(label);
	for (size_t i = 0; i < ll; i++)
		if ((unsigned char)label[i] < 0x20 || label[i] == 0x7f)
			rc = DP_EUSAGE;
	if (rc || ll > LABEL_MAX)
		return dp_error_set(DP_EUSAGE,
		                    "key label \"%.40s\": use at most %d printable characters",
		                    label, LABEL_MAX);
	if ((rc = dp_random(sid, sizeof(sid))) || (rc = dp_random(secret, sizeof(secret))) ||
	    (rc = dp_random(salt, sizeof(salt))))
		goto out;
	dp_hex(id, sid, sizeof(sid));
	slot_info_str(info, sizeof(info), r->id, id);
	if ((rc = hkdf_sha256(wrap, secret, salt, info)) || (rc = dp_aead_new(&a, wrap)))
		goto out;
	slot_ad(ad, sizeof(ad), r->id, id);
	if ((rc = dp_aead_seal(a, sealed, r->master, DP_MASTER_LEN, ad, strlen(ad))))
		goto out;
	if ((rc = dp_base64_encode(&b64salt, salt, sizeof(salt))) ||
	    (rc = dp_base64_encode(&b64data, sealed, sizeof(sealed))))
		goto out;
	now_rfc3339(now);
	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "unknown");
	host[sizeof(host) - 1] = 0;
	if (!(j = cJSON_CreateObject()) || !cJSON_AddStringToObject(j, "kdf", SLOT_KDF) ||
	    !cJSON_AddStringToObject(j, "salt", (const char *)b64salt.data) ||
	    !cJSON_AddStringToObject(j, "data", (const char *)b64data.data) ||
	    !cJSON_AddStringToObject(j, "label", label) ||
	    !cJSON_AddStringToObject(j, "created", now) ||
	    !cJSON_AddStringToObject(j, "host", host) || !(text = cJSON_PrintUnformatted(j))) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	snprintf(key, sizeof(key), "keys/%s", id);
	if ((rc = r->b->put(r->b, key, text, strlen(text))))
		goto out;
	dp_hex(shex, secret, sizeof(secret));
	snprintf(token_out, DP_KEYSLOT_TOKEN_LEN, TOKEN_PREFIX "%s-%s", id, shex);
	if (id_out)
		memcpy(id_out, id, DP_ID_HEX);
out:
	dp_wipe(secret, sizeof(secret));
	dp_wipe(shex, sizeof(shex));
	dp_wipe(wrap, sizeof(wrap));
	dp_wipe(sealed, sizeof(sealed));
	dp_aead_free(a);
	cJSON_Delete(j);
	free(text);
	dp_buf_free(&b64salt);
	dp_buf_free(&b64data);
	return rc;
}

/* ---- list / remove ---- */

static void copy_str(char *dst, size_t cap, const cJSON *v)
{
	snprintf(dst, cap, "%s", cJSON_IsString(v) ? v->valuestring : "");
}

static int info_cmp(const void *x, const void *y)
{
	const dp_keyslot_info *a = x, *b = y;
	int c = strcmp(a->created, b->created);
	return c ? c : strcmp(a->id, b->id);
}

int dp_keyslot_list(dp_repo *r, dp_keyslot_info **out, size_t *n)
{
	dp_keylist keys = {0};
	dp_keyslot_info *v = NULL;
	dp_buf text = {0};
	size_t cnt = 0;
	int rc = r->b->list(r->b, "keys/", dp_keylist_add, &keys);
	if (rc)
		goto out;
	if (keys.n && !(v = calloc(keys.n, sizeof(*v)))) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < keys.n; i++) {
		const char *id = keys.v[i] + strlen("keys/");
		if (strlen(id) != 64 || !is_hex64(id, 64))
			continue;
		dp_buf_reset(&text);
		rc = dp_backend_get_all(r->b, keys.v[i], &text);
		if (rc == DP_ENOTFOUND) { /* removed since the listing */
			dp_error_clear();
			rc = 0;
			continue;
		}
		if (rc)
			goto out;
		cJSON *j = cJSON_Parse((const char *)text.data);
		const cJSON *kdf = cJSON_GetObjectItemCaseSensitive(j, "kdf");
		dp_keyslot_info *e = &v[cnt++];
		memcpy(e->id, id, DP_ID_HEX);
		snprintf(e->kind, sizeof(e->kind), "%s",
		         !cJSON_IsString(kdf)                      ? "unknown"
		         : strcmp(kdf->valuestring, "scrypt") == 0 ? "passphrase"
		         : strcmp(kdf->valuestring, SLOT_KDF) == 0 ? "random"
		                                                   : "unknown");
		copy_str(e->label, sizeof(e->label), cJSON_GetObjectItemCaseSensitive(j, "label"));
		copy_str(e->created, sizeof(e->created),
		         cJSON_GetObjectItemCaseSensitive(j, "created"));
		copy_str(e->host, sizeof(e->host), cJSON_GetObjectItemCaseSensitive(j, "host"));
		cJSON_Delete(j);
	}
	if (cnt)
		qsort(v, cnt, sizeof(*v), info_cmp);
out:
	dp_keylist_free(&keys);
	dp_buf_free(&text);
	if (rc) {
		free(v);
		return rc;
	}
	*out = v;
	*n = cnt;
	return 0;
}

int dp_keyslot_remove(dp_repo *r, const char *id)
{
	dp_keyslot_info *v = NULL;
	size_t n = 0, match = SIZE_MAX, npass = 0;
	char key[80];
	size_t il = id ? strlen(id) : 0;
	if (il < 8 || il > 64 || !is_hex64(id, il))
		return dp_error_set(
		    DP_EUSAGE,
		    "key id \"%s\": give the full id or at least 8 of its hex digits "
		    "('dp-worker key-ls' lists them)",
		    id ? id : "");
	int rc = dp_keyslot_list(r, &v, &n);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(v[i].kind, "passphrase") == 0)
			npass++;
		if (strncmp(v[i].id, id, il) != 0)
			continue;
		if (match != SIZE_MAX) {
			rc = dp_error_set(DP_EUSAGE, "key id \"%s\" is ambiguous: give more digits",
			                  id);
			goto out;
		}
		match = i;
	}
	if (match == SIZE_MAX) {
		rc = dp_error_set(DP_ENOTFOUND, "no key \"%s\" in this repository", id);
		goto out;
	}
	if (strcmp(v[match].kind, "passphrase") == 0 && npass <= 1) {
		rc = dp_error_set(DP_EUSAGE,
		                  "key \"%.16s...\" is the last passphrase key: removing it would "
		                  "leave the repository without a passphrase; nothing was changed",
		                  v[match].id);
		goto out;
	}
	snprintf(key, sizeof(key), "keys/%s", v[match].id);
	rc = r->b->remove(r->b, key);
out:
	free(v);
	return rc;
}

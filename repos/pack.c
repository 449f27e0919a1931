/*
 * Packs (format.h): building one from sealed blobs, and reading its header.
 * A dp_packer belongs to one thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp/error.h"
#include "format.h"

int dp_packer_add(dp_packer *k, const uint8_t id[DP_HASH_LEN], const uint8_t *sealed, uint32_t len,
                  uint32_t raw_len)
{
	int rc = dp_array_grow(&k->locs, &k->cap, k->nlocs, sizeof(*k->locs));
	if (rc)
		return rc;
	dp_blob_loc *l = &k->locs[k->nlocs++];
	memcpy(l->id, id, DP_HASH_LEN);
	l->pack = 0;
	l->offset = (uint32_t)k->data.len;
	l->length = len;
	l->raw_length = raw_len;
	uint8_t e[DP_PACK_ENTRY_LEN];
	e[0] = 0;
	memcpy(e + 1, id, DP_HASH_LEN);
	dp_set_u32(e + 1 + DP_HASH_LEN, l->offset);
	dp_set_u32(e + 1 + DP_HASH_LEN + 4, len);
	dp_set_u32(e + 1 + DP_HASH_LEN + 8, raw_len);
	rc = dp_buf_append(&k->header, e, sizeof(e));
	if (!rc)
		rc = dp_buf_append(&k->data, sealed, len);
	return rc;
}

int dp_packer_finish(dp_repo *r, dp_aead *a, dp_packer *k)
{
	size_t before = k->data.len;
	int rc = dp_object_seal(r, a, "pack-header", k->header.data, k->header.len, &k->data);
	if (!rc)
		rc = dp_buf_put_u32(&k->data, (uint32_t)(k->data.len - before));
	return rc;
}

void dp_packer_reset(dp_packer *k)
{
	dp_buf_reset(&k->data);
	dp_buf_reset(&k->header);
	k->nlocs = 0;
}

void dp_packer_free(dp_packer *k)
{
	dp_buf_free(&k->data);
	dp_buf_free(&k->header);
	free(k->locs);
	memset(k, 0, sizeof(*k));
}

int dp_pack_key(char *key, size_t cap, const uint8_t id[DP_HASH_LEN])
{
	char hex[DP_ID_HEX];
	dp_hex(hex, id, DP_HASH_LEN);
	int n = snprintf(key, cap, "data/%.2s/%s", hex, hex);
	return (n < 0 || (size_t)n >= cap) ? DP_ERROR : 0;
}

int dp_pack_read_header(dp_repo *r, dp_aead *a, const char *key, const uint8_t *tail, size_t len,
                        uint64_t pack_size, dp_blob_loc **out, size_t *n)
{
	dp_buf plain = {0};
	dp_blob_loc *v = NULL;
	int rc;
	if (len < 4 + DP_SEAL_OVERHEAD || len > pack_size)
		return dp_error_set(DP_ECORRUPT, "pack \"%s\" is truncated", key);
	uint32_t hlen = dp_get_u32(tail + len - 4);
	if (hlen > len - 4 || hlen < DP_SEAL_OVERHEAD)
		return dp_error_set(DP_ECORRUPT, "pack \"%s\" has a malformed header length", key);
	if ((rc = dp_object_open(r, a, "pack-header", key, tail + len - 4 - hlen, hlen, &plain)))
		goto out;
	size_t count = plain.len / DP_PACK_ENTRY_LEN;
	if (plain.len % DP_PACK_ENTRY_LEN) {
		rc = dp_error_set(DP_ECORRUPT, "pack \"%s\" has a malformed header", key);
		goto out;
	}
	v = calloc(count + 1, sizeof(*v));
	if (!v) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < count; i++) {
		const uint8_t *e = plain.data + i * DP_PACK_ENTRY_LEN;
		memcpy(v[i].id, e + 1, DP_HASH_LEN);
		v[i].offset = dp_get_u32(e + 1 + DP_HASH_LEN);
		v[i].length = dp_get_u32(e + 1 + DP_HASH_LEN + 4);
		v[i].raw_length = dp_get_u32(e + 1 + DP_HASH_LEN + 8);
		if ((uint64_t)v[i].offset + v[i].length > pack_size - 4 - hlen) {
			rc = dp_error_set(DP_ECORRUPT, "pack \"%s\" header points past its data",
			                  key);
			goto out;
		}
	}
	*out = v;
	*n = count;
	v = NULL;
out:
	free(v);
	dp_buf_free(&plain);
	return rc;
}

/*
 * Packs (format.h): building one from sealed frames, and reading its header.
 * A dp_packer belongs to one thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp/error.h"
#include "format.h"

int dp_packer_add(dp_packer *k, dp_frame *f, const uint8_t *sealed, const dp_blob_loc *locs,
                  size_t n, const uint32_t *all_raw, size_t nall)
{
	int rc = dp_array_grow(&k->frames, &k->frames_cap, k->nframes, sizeof(*k->frames));
	if (rc)
		return rc;
	for (size_t i = 0; i < n && !rc; i++)
		rc = dp_array_grow(&k->locs, &k->cap, k->nlocs + i, sizeof(*k->locs));
	if (!rc && !k->header.len)
		rc = dp_buf_append(&k->header, "DPH2", 4);
	if (rc)
		return rc;
	f->offset = (uint32_t)k->data.len;
	uint8_t e[DP_FRAME_HEAD_LEN];
	memcpy(e, f->id, DP_HASH_LEN);
	dp_set_u32(e + DP_HASH_LEN, f->offset);
	dp_set_u32(e + DP_HASH_LEN + 4, f->length);
	dp_set_u32(e + DP_HASH_LEN + 8, f->raw_length);
	dp_set_u32(e + DP_HASH_LEN + 12, (uint32_t)nall);
	if ((rc = dp_buf_append(&k->header, e, sizeof(e))))
		return rc;
	for (size_t i = 0; i < nall && !rc; i++)
		rc = dp_buf_put_u32(&k->header, all_raw ? all_raw[i] : locs[i].raw_length);
	if (!rc)
		rc = dp_buf_append(&k->data, sealed, f->length);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		k->locs[k->nlocs] = locs[i];
		k->locs[k->nlocs++].frame = (uint32_t)k->nframes;
	}
	k->frames[k->nframes++] = *f;
	return 0;
}

int dp_packer_index(const dp_packer *k, const uint8_t pack_id[DP_HASH_LEN], dp_index *ix)
{
	uint32_t pk, base = (uint32_t)ix->nframes, fr;
	int rc = dp_index_add_pack(ix, pack_id, &pk);
	for (size_t i = 0; i < k->nframes && !rc; i++) {
		dp_frame f = k->frames[i];
		f.pack = pk;
		rc = dp_index_add_frame(ix, &f, &fr);
	}
	for (size_t i = 0; i < k->nlocs && !rc; i++) {
		dp_blob_loc l = k->locs[i];
		l.frame += base;
		rc = dp_index_set(ix, &l);
	}
	return rc;
}

int dp_pack_id(uint8_t id[DP_HASH_LEN], const uint8_t *pack, size_t len)
{
	size_t tail = len;
	if (len >= 4 && dp_get_u32(pack + len - 4) <= len - 4)
		tail = 4 + dp_get_u32(pack + len - 4);
	return dp_sha256(id, pack + len - tail, tail);
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
	k->nframes = 0;
}

void dp_packer_free(dp_packer *k)
{
	dp_buf_free(&k->data);
	dp_buf_free(&k->header);
	free(k->locs);
	free(k->frames);
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
                        uint64_t pack_size, dp_pack_header *h)
{
	dp_buf plain = {0};
	dp_pack_header v = {0};
	int rc;
	memset(h, 0, sizeof(*h));
	if (len < 4 + DP_SEAL_OVERHEAD || len > pack_size)
		return dp_error_set(DP_ECORRUPT, "pack \"%s\" is truncated", key);
	uint32_t hlen = dp_get_u32(tail + len - 4);
	if (hlen > len - 4 || hlen < DP_SEAL_OVERHEAD)
		return dp_error_set(DP_ECORRUPT, "pack \"%s\" has a malformed header length", key);
	if ((rc = dp_object_open(r, a, "pack-header", key, tail + len - 4 - hlen, hlen, &plain)))
		goto out;
	uint64_t data_end = pack_size - 4 - hlen;
	const uint8_t *p = plain.data, *end = plain.data + plain.len;
	size_t cap = 0, rcap = 0, nraw = 0;
	if (plain.len < 4 || memcmp(p, "DPH2", 4) != 0)
		goto bad;
	for (p += 4; p < end; v.nframes++) {
		if ((size_t)(end - p) < DP_FRAME_HEAD_LEN ||
		    dp_array_grow(&v.frames, &cap, v.nframes, sizeof(*v.frames)) ||
		    dp_array_grow(&v.first, &rcap, v.nframes + 1, sizeof(*v.first)))
			goto bad;
		dp_frame *f = &v.frames[v.nframes];
		memcpy(f->id, p, DP_HASH_LEN);
		f->pack = 0;
		f->offset = dp_get_u32(p + DP_HASH_LEN);
		f->length = dp_get_u32(p + DP_HASH_LEN + 4);
		f->raw_length = dp_get_u32(p + DP_HASH_LEN + 8);
		uint32_t n = dp_get_u32(p + DP_HASH_LEN + 12);
		p += DP_FRAME_HEAD_LEN;
		if ((size_t)(end - p) / 4 < n)
			goto bad;
		if ((uint64_t)f->offset + f->length > data_end) {
			rc = dp_error_set(DP_ECORRUPT, "pack \"%s\" header points past its data",
			                  key);
			goto out;
		}
		v.first[v.nframes] = (uint32_t)nraw;
		uint32_t *nr = realloc(v.raw, (nraw + n + 1) * sizeof(*nr));
		if (!nr)
			goto bad;
		v.raw = nr;
		uint64_t sum = 0;
		for (uint32_t i = 0; i < n; i++, p += 4)
			sum += v.raw[nraw++] = dp_get_u32(p);
		if (sum != f->raw_length || f->raw_length > dp_frame_max(r))
			goto bad;
	}
	if (dp_array_grow(&v.first, &rcap, v.nframes + 1, sizeof(*v.first)))
		goto bad;
	v.first[v.nframes] = (uint32_t)nraw;
	*h = v;
	memset(&v, 0, sizeof(v));
	goto out;
bad:
	rc = dp_error_set(DP_ECORRUPT, "pack \"%s\" has a malformed header", key);
out:
	dp_pack_header_free(&v);
	dp_buf_free(&plain);
	return rc;
}

void dp_pack_header_free(dp_pack_header *h)
{
	free(h->frames);
	free(h->first);
	free(h->raw);
	memset(h, 0, sizeof(*h));
}

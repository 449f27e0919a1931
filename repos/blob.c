/*
 * Chunk ids (keyed BLAKE3(MAC key, plaintext)) and frame sealing:
 * AES-256-GCM(flag | payload, ad = frame id), payload zstd-compressed when
 * that makes it smaller (format.h). A dp_sealer holds one thread's contexts and
 * scratch space; never share one between threads.
 */
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "dp/error.h"
#include "format.h"

struct dp_sealer {
	uint8_t mac_key[DP_KEY_LEN];
	dp_aead *aead;
	ZSTD_CCtx *cctx;
	ZSTD_DCtx *dctx;
	uint8_t *scratch; /* flag byte + compressed payload */
	size_t scratch_cap;
	int level;
};

size_t dp_frame_sealed_bound(size_t raw_len)
{
	return 1 + ZSTD_compressBound(raw_len) + DP_SEAL_OVERHEAD;
}

int dp_sealer_new(dp_sealer **out, const dp_repo *r)
{
	dp_sealer *s = calloc(1, sizeof(*s));
	int rc;
	if (!s)
		return dp_error_set(DP_ERROR, "out of memory");
	s->level = r->zstd_level;
	s->scratch_cap = 1 + ZSTD_compressBound(dp_frame_max(r));
	s->scratch = malloc(s->scratch_cap);
	s->cctx = ZSTD_createCCtx();
	s->dctx = ZSTD_createDCtx();
	if (!s->scratch || !s->cctx || !s->dctx) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto fail;
	}
	ZSTD_CCtx_setParameter(s->cctx, ZSTD_c_compressionLevel, s->level);
	/* No checksum (GCM authenticates), no content size needed (the
	 * index has the raw length). */
	ZSTD_CCtx_setParameter(s->cctx, ZSTD_c_checksumFlag, 0);
	memcpy(s->mac_key, dp_repo_mac_key(r), DP_KEY_LEN);
	if ((rc = dp_aead_new(&s->aead, dp_repo_enc_key(r))))
		goto fail;
	*out = s;
	return 0;
fail:
	dp_sealer_free(s);
	return rc;
}

void dp_sealer_free(dp_sealer *s)
{
	if (!s)
		return;
	dp_wipe(s->mac_key, sizeof(s->mac_key));
	dp_aead_free(s->aead);
	ZSTD_freeCCtx(s->cctx);
	ZSTD_freeDCtx(s->dctx);
	if (s->scratch)
		dp_wipe(s->scratch, s->scratch_cap);
	free(s->scratch);
	free(s);
}

int dp_blob_id(dp_sealer *s, uint8_t id[DP_HASH_LEN], const void *raw, size_t len)
{
	return dp_blake3_keyed(id, s->mac_key, raw, len);
}

int dp_blob_ids(dp_sealer *s, uint8_t (*ids)[DP_HASH_LEN], const uint8_t *const *raw,
                const size_t *len, size_t n)
{
	return dp_blake3_keyed_many(ids, s->mac_key, raw, len, n);
}

int dp_frame_id(uint8_t id[DP_HASH_LEN], const uint8_t *member_ids, size_t n)
{
	return dp_sha256(id, member_ids, n * DP_HASH_LEN);
}

int dp_frame_seal(dp_sealer *s, const uint8_t id[DP_HASH_LEN], const void *raw, size_t len,
                  uint8_t *out, size_t *out_len)
{
	if (len + 1 > s->scratch_cap)
		return dp_error_set(DP_ERROR, "frame of %zu bytes exceeds the frame maximum", len);
	size_t plain_len;
	size_t c = ZSTD_compress2(s->cctx, s->scratch + 1, s->scratch_cap - 1, raw, len);
	if (!ZSTD_isError(c) && c < len) {
		s->scratch[0] = 1;
		plain_len = 1 + c;
	} else {
		s->scratch[0] = 0;
		memcpy(s->scratch + 1, raw, len);
		plain_len = 1 + len;
	}
	int rc = dp_aead_seal(s->aead, out, s->scratch, plain_len, id, DP_HASH_LEN);
	if (rc)
		return rc;
	*out_len = plain_len + DP_SEAL_OVERHEAD;
	return 0;
}

int dp_frame_open(dp_sealer *s, const uint8_t id[DP_HASH_LEN], const uint8_t *sealed, size_t len,
                  uint8_t *out, uint32_t raw_len)
{
	if (len < DP_SEAL_OVERHEAD + 1 || len - DP_SEAL_OVERHEAD > s->scratch_cap)
		return DP_ECORRUPT;
	size_t plain_len = len - DP_SEAL_OVERHEAD;
	if (dp_aead_open(s->aead, s->scratch, sealed, len, id, DP_HASH_LEN) != 0)
		return DP_ECORRUPT;
	if (s->scratch[0] == 0) {
		if (plain_len - 1 != raw_len)
			return DP_ECORRUPT;
		memcpy(out, s->scratch + 1, raw_len);
	} else if (s->scratch[0] == 1) {
		size_t d =
		    ZSTD_decompressDCtx(s->dctx, out, raw_len, s->scratch + 1, plain_len - 1);
		if (ZSTD_isError(d) || d != raw_len)
			return DP_ECORRUPT;
	} else {
		return DP_ECORRUPT;
	}
	return 0;
}

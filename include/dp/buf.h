/*
 * The one growable byte buffer. A zeroed dp_buf is empty and valid.
 * dp_buf_wipe clears the bytes before freeing (for secrets).
 */
#ifndef DP_BUF_H
#define DP_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct dp_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
} dp_buf;

int dp_buf_reserve(dp_buf *b, size_t extra); /* room for len+extra bytes */
/* Gives the empty buffer b room for cap bytes at an address aligned to align
 * (a power of two, for O_DIRECT writes). Growing it past cap later keeps
 * the bytes but not the alignment. */
int dp_buf_alloc_aligned(dp_buf *b, size_t cap, size_t align);
int dp_buf_append(dp_buf *b, const void *data, size_t len);
int dp_buf_appendf(dp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int dp_buf_put_u32(dp_buf *b, uint32_t v); /* little endian */
int dp_buf_put_u64(dp_buf *b, uint64_t v);
void dp_buf_reset(dp_buf *b); /* len = 0, keeps memory */
void dp_buf_free(dp_buf *b);
void dp_buf_wipe(dp_buf *b); /* zero the memory, then free */

/* Makes room for element len of the array *pv (elements of elem bytes,
 * *cap of them allocated), doubling it when full. On failure the array is
 * unchanged and the error is set. */
int dp_array_grow(void *pv, size_t *cap, size_t len, size_t elem);

/* Little-endian readers over raw memory. */
uint32_t dp_get_u32(const uint8_t *p);
uint64_t dp_get_u64(const uint8_t *p);
void dp_set_u32(uint8_t *p, uint32_t v);
void dp_set_u64(uint8_t *p, uint64_t v);

#endif

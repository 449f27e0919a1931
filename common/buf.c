/*
 * dp_buf: the one growable byte buffer. Grows by doubling; always keeps one
 * spare byte so that text can be NUL-terminated outside len.
 */
#include "dp/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp/crypto.h"
#include "dp/error.h"

int dp_buf_reserve(dp_buf *b, size_t extra)
{
	if (extra > SIZE_MAX / 2 - b->len)
		return dp_error_set(DP_ERROR, "buffer too large");
	size_t need = b->len + extra + 1;
	if (need <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	uint8_t *p = realloc(b->data, cap);
	if (!p)
		return dp_error_set(DP_ERROR, "out of memory (%zu bytes)", cap);
	b->data = p;
	b->cap = cap;
	return 0;
}

int dp_buf_alloc_aligned(dp_buf *b, size_t cap, size_t align)
{
	void *p = NULL;
	if (b->data || posix_memalign(&p, align, cap + 1) != 0)
		return dp_error_set(DP_ERROR, "out of memory (%zu bytes)", cap);
	b->data = p;
	b->len = 0;
	b->cap = cap + 1;
	return 0;
}

int dp_buf_append(dp_buf *b, const void *data, size_t len)
{
	int rc = dp_buf_reserve(b, len);
	if (rc)
		return rc;
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = 0;
	return 0;
}

int dp_buf_appendf(dp_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return dp_error_set(DP_ERROR, "bad format");
	int rc = dp_buf_reserve(b, (size_t)n);
	if (rc)
		return rc;
	va_start(ap, fmt);
	vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

int dp_buf_put_u32(dp_buf *b, uint32_t v)
{
	uint8_t p[4];
	dp_set_u32(p, v);
	return dp_buf_append(b, p, 4);
}

int dp_buf_put_u64(dp_buf *b, uint64_t v)
{
	uint8_t p[8];
	dp_set_u64(p, v);
	return dp_buf_append(b, p, 8);
}

void dp_buf_reset(dp_buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = 0;
}

void dp_buf_free(dp_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

void dp_buf_wipe(dp_buf *b)
{
	if (b->data)
		dp_wipe(b->data, b->cap);
	dp_buf_free(b);
}

int dp_array_grow(void *pv, size_t *cap, size_t len, size_t elem)
{
	if (len < *cap)
		return 0;
	size_t ncap = *cap ? *cap * 2 : 16;
	if (ncap > SIZE_MAX / elem)
		return dp_error_set(DP_ERROR, "out of memory");
	void **p = pv;
	void *n = realloc(*p, ncap * elem);
	if (!n)
		return dp_error_set(DP_ERROR, "out of memory (%zu bytes)", ncap * elem);
	*p = n;
	*cap = ncap;
	return 0;
}

uint32_t dp_get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t dp_get_u64(const uint8_t *p)
{
	return (uint64_t)dp_get_u32(p) | (uint64_t)dp_get_u32(p + 4) << 32;
}

void dp_set_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

void dp_set_u64(uint8_t *p, uint64_t v)
{
	dp_set_u32(p, (uint32_t)v);
	dp_set_u32(p + 4, (uint32_t)(v >> 32));
}

/*
 * dp_keylist: the keys (and sizes) a backend listing returned, for the code
 * that lists first and reads after (open, index load, check, repair).
 */
#include <stdlib.h>
#include <string.h>

#include "dp/error.h"
#include "format.h"

int dp_keylist_add(const char *key, uint64_t size, void *arg)
{
	dp_keylist *l = arg;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 64;
		char **v = realloc(l->v, cap * sizeof(*v));
		if (!v)
			return dp_error_set(DP_ERROR, "out of memory");
		l->v = v;
		uint64_t *s = realloc(l->size, cap * sizeof(*s));
		if (!s)
			return dp_error_set(DP_ERROR, "out of memory");
		l->size = s;
		l->cap = cap;
	}
	if (!(l->v[l->n] = strdup(key)))
		return dp_error_set(DP_ERROR, "out of memory");
	l->size[l->n++] = size;
	return 0;
}

void dp_keylist_free(dp_keylist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	free(l->size);
	memset(l, 0, sizeof(*l));
}

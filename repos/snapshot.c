/*
 * Snapshot manifests: what one push stored (format.h). Listing decrypts each
 * snapshot object; a repository keeps a few thousand of them at most, so
 * this is cheap next to reading data.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp/backend.h"
#include "dp/error.h"
#include "dp/log.h"
#include "format.h"

int dp_validate_name(const char *name)
{
	size_t len = name ? strlen(name) : 0;
	if (len == 0 || len > 255)
		return dp_error_set(DP_EUSAGE, "a snapshot name must be 1 to 255 bytes long");
	if (name[0] == '/' || strncmp(name, "../", 3) == 0 || strstr(name, "/..") ||
	    strcmp(name, "..") == 0)
		return dp_error_set(
		    DP_EUSAGE,
		    "snapshot name \"%s\" must not start with '/' or contain \"..\" "
		    "path parts",
		    name);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
			return dp_error_set(DP_EUSAGE,
			                    "snapshot name must not contain control characters");
	return 0;
}

int dp_snapshot_encode(const dp_snapshot_info *info, const uint8_t *slices, size_t n, dp_buf *out)
{
	int rc = 0;
	cJSON *j = cJSON_CreateObject();
	char *text = NULL;
	if (!j)
		return dp_error_set(DP_ERROR, "out of memory");
	cJSON_AddStringToObject(j, "name", info->name);
	cJSON_AddStringToObject(j, "kind", info->kind);
	cJSON_AddStringToObject(j, "host", info->host);
	cJSON_AddNumberToObject(j, "time", (double)info->time);
	cJSON_AddNumberToObject(j, "nsec", (double)info->nsec);
	cJSON_AddNumberToObject(j, "size", (double)info->size);
	cJSON_AddNumberToObject(j, "blobs", (double)info->blobs);
	if (info->meta) {
		cJSON *m = cJSON_Parse(info->meta);
		if (!cJSON_IsObject(m)) {
			cJSON_Delete(m);
			rc = dp_error_set(DP_EUSAGE, "snapshot metadata must be a JSON object");
			goto out;
		}
		cJSON_AddItemToObject(j, "meta", m);
	}
	if (!(text = cJSON_PrintUnformatted(j))) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	size_t tl = strlen(text);
	if ((rc = dp_buf_reserve(out, 16 + tl + n * DP_SLICE_LEN)))
		goto out;
	dp_buf_append(out, "DPS2", 4);
	dp_buf_put_u32(out, (uint32_t)tl);
	dp_buf_append(out, text, tl);
	dp_buf_put_u64(out, n);
	dp_buf_append(out, slices, n * DP_SLICE_LEN);
out:
	free(text);
	cJSON_Delete(j);
	return rc;
}

static void copy_str(char *dst, size_t cap, const cJSON *v)
{
	snprintf(dst, cap, "%s", cJSON_IsString(v) ? v->valuestring : "");
}

static int decode(const char *id, const uint8_t *p, size_t len, dp_snapshot *s, bool entries)
{
	if (len < 8 || memcmp(p, "DPS2", 4) != 0)
		return DP_ECORRUPT;
	uint32_t tl = dp_get_u32(p + 4);
	if (tl > len - 8 || len - 8 - tl < 8)
		return DP_ECORRUPT;
	char *text = malloc(tl + 1);
	if (!text)
		return dp_error_set(DP_ERROR, "out of memory");
	memcpy(text, p + 8, tl);
	text[tl] = 0;
	cJSON *j = cJSON_Parse(text);
	free(text);
	if (!cJSON_IsObject(j)) {
		cJSON_Delete(j);
		return DP_ECORRUPT;
	}
	memset(s, 0, sizeof(*s));
	snprintf(s->info.id, sizeof(s->info.id), "%s", id);
	copy_str(s->info.name, sizeof(s->info.name), cJSON_GetObjectItemCaseSensitive(j, "name"));
	copy_str(s->info.kind, sizeof(s->info.kind), cJSON_GetObjectItemCaseSensitive(j, "kind"));
	copy_str(s->info.host, sizeof(s->info.host), cJSON_GetObjectItemCaseSensitive(j, "host"));
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "time");
	const cJSON *sz = cJSON_GetObjectItemCaseSensitive(j, "size");
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "meta");
	const cJSON *ns = cJSON_GetObjectItemCaseSensitive(j, "nsec");
	const cJSON *nb = cJSON_GetObjectItemCaseSensitive(j, "blobs");
	s->info.time = cJSON_IsNumber(t) ? (int64_t)t->valuedouble : 0;
	s->info.nsec = cJSON_IsNumber(ns) && ns->valuedouble >= 0 && ns->valuedouble < 1e9
	                   ? (int32_t)ns->valuedouble
	                   : 0;
	s->info.size = cJSON_IsNumber(sz) ? (uint64_t)sz->valuedouble : 0;
	s->info.blobs = cJSON_IsNumber(nb) && nb->valuedouble >= 0 ? (uint64_t)nb->valuedouble : 0;
	if (cJSON_IsObject(m))
		s->info.meta = cJSON_PrintUnformatted(m);
	cJSON_Delete(j);

	const uint8_t *q = p + 8 + tl;
	uint64_t n = dp_get_u64(q);
	q += 8;
	uint64_t rest = (uint64_t)(len - (size_t)(q - p));
	if (n > rest / DP_SLICE_LEN || rest != n * DP_SLICE_LEN)
		goto bad;
	if (!entries)
		return 0;
	s->n = (size_t)n;
	s->frame_ids = malloc((s->n + 1) * DP_HASH_LEN);
	s->start = malloc((s->n + 1) * sizeof(uint32_t));
	s->length = malloc((s->n + 1) * sizeof(uint32_t));
	if (!s->frame_ids || !s->start || !s->length) {
		dp_snapshot_free(s);
		return dp_error_set(DP_ERROR, "out of memory");
	}
	uint64_t total = 0;
	for (size_t i = 0; i < s->n; i++, q += DP_SLICE_LEN) {
		memcpy(s->frame_ids[i], q, DP_HASH_LEN);
		s->start[i] = dp_get_u32(q + DP_HASH_LEN);
		s->length[i] = dp_get_u32(q + DP_HASH_LEN + 4);
		if (s->length[i] == 0)
			goto bad;
		total += s->length[i];
	}
	if (total != s->info.size)
		goto bad;
	return 0;
bad:
	dp_snapshot_free(s);
	return DP_ECORRUPT;
}

static int load(dp_repo *r, const char *id_hex, dp_snapshot *out, bool entries)
{
	char key[100];
	dp_buf plain = {0};
	snprintf(key, sizeof(key), "snapshots/%s", id_hex);
	int rc = dp_object_read(r, "snapshot", key, &plain);
	if (rc == 0 && (rc = decode(id_hex, plain.data, plain.len, out, entries)) == DP_ECORRUPT)
		rc = dp_error_set(DP_ECORRUPT, "snapshot \"%s\" is malformed", key);
	dp_buf_free(&plain);
	return rc;
}

int dp_snapshot_load(dp_repo *r, const char *id_hex, dp_snapshot *out)
{
	return load(r, id_hex, out, true);
}

uint32_t dp_slice_frame(const dp_index *ix, const dp_snapshot *s, size_t i, bool *fits)
{
	uint32_t fr = dp_index_find_frame(ix, s->frame_ids[i]);
	*fits = fr != DP_INDEX_EMPTY &&
	        (uint64_t)s->start[i] + s->length[i] <= ix->frames[fr].raw_length;
	return fr;
}

void dp_snapshot_free(dp_snapshot *s)
{
	free(s->info.meta);
	free(s->frame_ids);
	free(s->start);
	free(s->length);
	memset(s, 0, sizeof(*s));
}

struct list {
	dp_repo *r;
	dp_snapshot_info *v;
	size_t n, cap;
	bool strict;
};

static int list_one(const char *key, uint64_t size, void *arg)
{
	(void)size;
	struct list *l = arg;
	dp_snapshot s;
	const char *id = key + strlen("snapshots/");
	if (strlen(id) != 64)
		return 0; /* not ours */
	int rc = load(l->r, id, &s, false);
	if (rc == DP_ECORRUPT && !l->strict) {
		/* One damaged snapshot must not stand between the user and the
		 * others: skip it, say so (check reports it too). */
		dp_warn("skipping snapshot \"%s\": %s", id, dp_error_last());
		dp_error_clear();
		return 0;
	}
	if (rc)
		return rc;
	if ((rc = dp_array_grow(&l->v, &l->cap, l->n, sizeof(*l->v)))) {
		dp_snapshot_free(&s);
		return rc;
	}
	l->v[l->n++] = s.info;
	return 0;
}

static int by_time(const void *a, const void *b)
{
	const dp_snapshot_info *x = a, *y = b;
	if (x->time != y->time)
		return x->time < y->time ? -1 : 1;
	if (x->nsec != y->nsec)
		return x->nsec < y->nsec ? -1 : 1;
	return strcmp(x->id, y->id);
}

static int list(dp_repo *r, dp_snapshot_info **out, size_t *n, bool strict)
{
	struct list l = {.r = r, .strict = strict};
	int rc = r->b->list(r->b, "snapshots/", list_one, &l);
	if (rc) {
		dp_snapshot_info_free(l.v, l.n);
		return rc;
	}
	if (l.n)
		qsort(l.v, l.n, sizeof(*l.v), by_time);
	*out = l.v;
	*n = l.n;
	return 0;
}

int dp_snapshot_list(dp_repo *r, dp_snapshot_info **out, size_t *n)
{
	return list(r, out, n, false);
}

int dp_snapshot_list_strict(dp_repo *r, dp_snapshot_info **out, size_t *n)
{
	return list(r, out, n, true);
}

void dp_snapshot_info_free(dp_snapshot_info *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i].meta);
	free(v);
}

static bool is_hex_prefix(const char *s)
{
	size_t n = strlen(s);
	if (n < 8 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* Finds the newest snapshot called name_or_id, else the one whose id starts
 * with it. Fills *out (meta owned by the caller). */
int dp_snapshot_find(dp_repo *r, const char *name_or_id, dp_snapshot_info *out)
{
	dp_snapshot_info *v = NULL;
	size_t n = 0;
	int rc = dp_snapshot_list(r, &v, &n);
	if (rc)
		return rc;
	ssize_t hit = -1;
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i].name, name_or_id) == 0)
			hit = (ssize_t)i; /* sorted oldest first: the last match is newest */
	if (hit < 0 && is_hex_prefix(name_or_id)) {
		size_t len = strlen(name_or_id);
		for (size_t i = 0; i < n; i++) {
			if (strncmp(v[i].id, name_or_id, len) != 0)
				continue;
			if (hit >= 0) {
				rc = dp_error_set(
				    DP_EUSAGE,
				    "snapshot id prefix \"%s\" is ambiguous: give more "
				    "digits",
				    name_or_id);
				goto out;
			}
			hit = (ssize_t)i;
		}
	}
	if (hit < 0) {
		rc = dp_error_set(DP_ENOTFOUND, "no snapshot named \"%s\" (nor with that id)",
		                  name_or_id);
		goto out;
	}
	*out = v[hit];
	v[hit].meta = NULL;
out:
	dp_snapshot_info_free(v, n);
	return rc;
}

int dp_snapshot_resolve(dp_repo *r, const char *name_or_id, char id_out[DP_ID_HEX])
{
	dp_snapshot_info info;
	int rc = dp_snapshot_find(r, name_or_id, &info);
	if (rc)
		return rc;
	memcpy(id_out, info.id, DP_ID_HEX);
	free(info.meta);
	return 0;
}

int dp_snapshot_remove(dp_repo *r, const char *name_or_id, size_t *removed)
{
	dp_snapshot_info *v = NULL;
	size_t n = 0, count = 0;
	char key[100];
	dp_lock *lock = NULL;
	int rc = dp_lock_acquire(&lock, r, false, "remove snapshots");
	if (rc)
		return rc;
	if ((rc = dp_snapshot_list(r, &v, &n)))
		goto out;
	bool by_name = false;
	for (size_t i = 0; i < n; i++)
		by_name |= strcmp(v[i].name, name_or_id) == 0;
	for (size_t i = 0; i < n; i++) {
		bool match = by_name ? strcmp(v[i].name, name_or_id) == 0
		                     : (is_hex_prefix(name_or_id) &&
		                        strncmp(v[i].id, name_or_id, strlen(name_or_id)) == 0);
		if (!match)
			continue;
		if (!by_name && count) {
			rc = dp_error_set(
			    DP_EUSAGE, "snapshot id prefix \"%s\" is ambiguous: give more digits",
			    name_or_id);
			goto out;
		}
		count++;
	}
	if (count == 0) {
		/* A damaged snapshot is not listed; its full id still removes it. */
		uint64_t size;
		snprintf(key, sizeof(key), "snapshots/%s", name_or_id);
		if (strlen(name_or_id) == 64 && is_hex_prefix(name_or_id) &&
		    r->b->stat(r->b, key, &size) == 0) {
			if ((rc = r->b->remove(r->b, key)) == 0 && removed)
				*removed = 1;
			goto out;
		}
		dp_error_clear();
		rc = dp_error_set(DP_ENOTFOUND, "no snapshot named \"%s\" (nor with that id)",
		                  name_or_id);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		bool match = by_name ? strcmp(v[i].name, name_or_id) == 0
		                     : strncmp(v[i].id, name_or_id, strlen(name_or_id)) == 0;
		if (!match)
			continue;
		snprintf(key, sizeof(key), "snapshots/%s", v[i].id);
		if ((rc = r->b->remove(r->b, key)))
			goto out;
	}
	if (removed)
		*removed = count;
out:
	dp_snapshot_info_free(v, n);
	dp_lock_release(lock);
	return rc;
}

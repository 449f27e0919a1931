/*
 * Manifests: YAML (libyaml's document loader) or JSON (cJSON) text into one
 * cJSON tree per document, plus kind names, resource names, canonical JSON
 * and a small block-style YAML printer for `dp get -o yaml`.
 *
 * YAML scalars follow the YAML 1.2 core schema: quoted scalars are strings;
 * plain ones are null (~, null, empty), booleans (true/false), integers,
 * floats, or else strings. Duplicate keys are an error. Aliases are expanded,
 * so nesting is limited to 64 levels (a cycle would otherwise not end) and a
 * document to 200000 values (an alias bomb would otherwise fill memory).
 * A dp_manifest belongs to one thread at a time.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <yaml.h>

#include "dp/error.h"
#include "manifest_int.h"

#define MAX_DEPTH 64
#define MAX_INPUT (16u << 20)
#define MAX_NODES 200000u /* per document, after alias expansion */

static const struct {
	const char *name, *lower;
	const char *aliases[5];
} kinds[DP_KIND_COUNT] = {
    [DP_KIND_BACKUP_REPO] = {"BackupRepo", "backuprepo", {"backuprepos", "repo", "repos", "br"}},
    [DP_KIND_ACTION_SET] = {"ActionSet", "actionset", {"actionsets", "as"}},
    [DP_KIND_BACKUP_POLICY] = {"BackupPolicy",
                               "backuppolicy",
                               {"backuppolicies", "policy", "policies", "bp"}},
    [DP_KIND_BACKUP_SCHEDULE] = {"BackupSchedule",
                                 "backupschedule",
                                 {"backupschedules", "schedule", "schedules", "bs"}},
    [DP_KIND_BACKUP] = {"Backup", "backup", {"backups", "bk", "bks"}},
    [DP_KIND_RESTORE] = {"Restore", "restore", {"restores", "rs"}},
};

const char *dp_kind_name(dp_kind k)
{
	return k < DP_KIND_COUNT ? kinds[k].name : "?";
}

const char *dp_kind_lower(dp_kind k)
{
	return k < DP_KIND_COUNT ? kinds[k].lower : "?";
}

int dp_kind_parse(dp_kind *out, const char *text)
{
	for (int k = 0; k < DP_KIND_COUNT; k++) {
		if (strcasecmp(text, kinds[k].lower) == 0) {
			*out = (dp_kind)k;
			return 0;
		}
		for (int a = 0; a < 5 && kinds[k].aliases[a]; a++)
			if (strcasecmp(text, kinds[k].aliases[a]) == 0) {
				*out = (dp_kind)k;
				return 0;
			}
	}
	return dp_error_set(DP_EUSAGE,
	                    "unknown kind \"%s\" (use backuprepo, actionset, backuppolicy, "
	                    "backupschedule, backup or restore)",
	                    text);
}

int dp_name_check(const char *name)
{
	size_t n = strlen(name);
	if (n == 0)
		return dp_error_set(DP_EUSAGE, "empty name");
	if (n > DP_NAME_MAX)
		return dp_error_set(DP_EUSAGE, "name longer than %d characters", DP_NAME_MAX);
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
			return dp_error_set(
			    DP_EUSAGE, "names use lowercase letters, digits, '-' and '.' only");
	}
	if (!isalnum((unsigned char)name[0]) || !isalnum((unsigned char)name[n - 1]))
		return dp_error_set(DP_EUSAGE, "names start and end with a letter or digit");
	if (strstr(name, ".."))
		return dp_error_set(DP_EUSAGE, "names cannot contain \"..\"");
	return 0;
}

char *dp_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = malloc(n);
	if (d)
		memcpy(d, s, n);
	return d;
}

/* ---- manifest container ---- */

static int add_doc(dp_manifest *m, cJSON *root, int line)
{
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 8;
		struct dp_doc *d = realloc(m->docs, cap * sizeof(*d));
		if (!d) {
			cJSON_Delete(root);
			return dp_error_set(DP_ERROR, "out of memory");
		}
		m->docs = d;
		m->cap = cap;
	}
	struct dp_doc *d = &m->docs[m->n++];
	memset(d, 0, sizeof(*d));
	d->root = root;
	d->index = (int)m->n;
	d->line = line;
	return 0;
}

/* A document, or a List whose items are documents. Takes root. */
static int add_root(dp_manifest *m, cJSON *root, int line)
{
	if (!cJSON_IsObject(root)) {
		cJSON_Delete(root);
		return dp_error_set(DP_EUSAGE,
		                    "%s: document %zu (line %d): not a mapping of fields",
		                    m->source, m->n + 1, line);
	}
	const cJSON *kind = cJSON_GetObjectItemCaseSensitive(root, "kind");
	if (cJSON_IsString(kind) && strcmp(kind->valuestring, "List") == 0) {
		cJSON *items = cJSON_DetachItemFromObjectCaseSensitive(root, "items");
		cJSON_Delete(root);
		if (!cJSON_IsArray(items)) {
			cJSON_Delete(items);
			return dp_error_set(DP_EUSAGE, "%s: line %d: a List needs items: [...]",
			                    m->source, line);
		}
		int rc = 0;
		while (!rc && cJSON_GetArraySize(items) > 0)
			rc = add_root(m, cJSON_DetachItemFromArray(items, 0), line);
		cJSON_Delete(items);
		return rc;
	}
	return add_doc(m, root, line);
}

void dp_manifest_free(dp_manifest *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n; i++) {
		cJSON_Delete(m->docs[i].root);
		free(m->docs[i].name);
		free(m->docs[i].spec);
		free(m->docs[i].meta);
	}
	free(m->docs);
	free(m->source);
	free(m);
}

size_t dp_manifest_count(const dp_manifest *m)
{
	return m->n;
}

dp_kind dp_manifest_kind(const dp_manifest *m, size_t i)
{
	return m->docs[i].kind;
}

const char *dp_manifest_name(const dp_manifest *m, size_t i)
{
	return m->docs[i].name;
}

const char *dp_manifest_spec(const dp_manifest *m, size_t i)
{
	return m->docs[i].spec;
}

const char *dp_manifest_meta(const dp_manifest *m, size_t i)
{
	return m->docs[i].meta;
}

/* ---- YAML ---- */

static bool match_int(const char *s)
{
	if (*s == '-' || *s == '+')
		s++;
	if (!isdigit((unsigned char)*s))
		return false;
	while (isdigit((unsigned char)*s))
		s++;
	return *s == 0;
}

static bool match_float(const char *s)
{
	bool digits = false;
	if (*s == '-' || *s == '+')
		s++;
	while (isdigit((unsigned char)*s)) {
		s++;
		digits = true;
	}
	if (*s == '.') {
		s++;
		while (isdigit((unsigned char)*s)) {
			s++;
			digits = true;
		}
	}
	if (!digits)
		return false;
	if (*s == 'e' || *s == 'E') {
		s++;
		if (*s == '-' || *s == '+')
			s++;
		if (!isdigit((unsigned char)*s))
			return false;
		while (isdigit((unsigned char)*s))
			s++;
	}
	return *s == 0;
}

static cJSON *plain_scalar(const char *s)
{
	if (!*s || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
	    strcmp(s, "NULL") == 0)
		return cJSON_CreateNull();
	if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0)
		return cJSON_CreateTrue();
	if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0)
		return cJSON_CreateFalse();
	if (match_int(s) || match_float(s)) {
		errno = 0;
		double v = strtod(s, NULL);
		/* Integers beyond 2^53 would lose digits as doubles: keep the text. */
		if (errno == 0 && isfinite(v) && !(match_int(s) && fabs(v) > 9007199254740992.0))
			return cJSON_CreateNumber(v);
	}
	return cJSON_CreateString(s);
}

static int yaml_node_to_json(dp_manifest *m, yaml_document_t *doc, yaml_node_t *node, int depth,
                             size_t *budget, cJSON **out)
{
	*out = NULL;
	if (*budget == 0)
		return dp_error_set(DP_EUSAGE, "%s:%zu: more than %u values (aliases expanding?)",
		                    m->source, node->start_mark.line + 1, MAX_NODES);
	--*budget;
	if (depth > MAX_DEPTH)
		return dp_error_set(DP_EUSAGE, "%s:%zu: nesting deeper than %d levels", m->source,
		                    node->start_mark.line + 1, MAX_DEPTH);
	switch (node->type) {
	case YAML_SCALAR_NODE: {
		const char *s = (const char *)node->data.scalar.value;
		bool plain = node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
		const char *tag = (const char *)node->tag;
		/* libyaml gives untagged scalars the str tag too, so only the
		 * style tells a plain 5432 from a quoted "5432". Other tags
		 * (!!int, !!bool) resolve from the text. */
		if (tag && strcmp(tag, YAML_STR_TAG) != 0 && strcmp(tag, "!") != 0)
			plain = true;
		*out = plain ? plain_scalar(s) : cJSON_CreateString(s);
		break;
	}
	case YAML_SEQUENCE_NODE: {
		*out = cJSON_CreateArray();
		for (yaml_node_item_t *it = node->data.sequence.items.start;
		     *out && it < node->data.sequence.items.top; it++) {
			cJSON *child;
			int rc = yaml_node_to_json(m, doc, yaml_document_get_node(doc, *it),
			                           depth + 1, budget, &child);
			if (rc) {
				cJSON_Delete(*out);
				*out = NULL;
				return rc;
			}
			cJSON_AddItemToArray(*out, child);
		}
		break;
	}
	case YAML_MAPPING_NODE: {
		*out = cJSON_CreateObject();
		for (yaml_node_pair_t *p = node->data.mapping.pairs.start;
		     *out && p < node->data.mapping.pairs.top; p++) {
			yaml_node_t *k = yaml_document_get_node(doc, p->key);
			if (!k || k->type != YAML_SCALAR_NODE) {
				cJSON_Delete(*out);
				*out = NULL;
				return dp_error_set(DP_EUSAGE, "%s:%zu: keys must be plain words",
				                    m->source, node->start_mark.line + 1);
			}
			const char *key = (const char *)k->data.scalar.value;
			if (cJSON_GetObjectItemCaseSensitive(*out, key)) {
				cJSON_Delete(*out);
				*out = NULL;
				return dp_error_set(DP_EUSAGE, "%s:%zu: duplicate key \"%s\"",
				                    m->source, k->start_mark.line + 1, key);
			}
			cJSON *child;
			int rc = yaml_node_to_json(m, doc, yaml_document_get_node(doc, p->value),
			                           depth + 1, budget, &child);
			if (rc) {
				cJSON_Delete(*out);
				*out = NULL;
				return rc;
			}
			cJSON_AddItemToObject(*out, key, child);
		}
		break;
	}
	default:
		return dp_error_set(DP_EUSAGE, "%s: empty YAML node", m->source);
	}
	if (!*out)
		return dp_error_set(DP_ERROR, "out of memory");
	return 0;
}

static int parse_yaml(dp_manifest *m, const char *text, size_t len)
{
	yaml_parser_t parser;
	int rc = 0;
	if (!yaml_parser_initialize(&parser))
		return dp_error_set(DP_ERROR, "out of memory");
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	for (;;) {
		yaml_document_t doc;
		if (!yaml_parser_load(&parser, &doc)) {
			rc = dp_error_set(
			    DP_EUSAGE, "%s:%zu:%zu: %s%s%s", m->source,
			    parser.problem_mark.line + 1, parser.problem_mark.column + 1,
			    parser.problem ? parser.problem : "bad YAML", parser.context ? " " : "",
			    parser.context ? parser.context : "");
			break;
		}
		yaml_node_t *root = yaml_document_get_root_node(&doc);
		if (!root) {
			yaml_document_delete(&doc);
			break; /* end of stream */
		}
		int line = (int)root->start_mark.line + 1;
		cJSON *json = NULL;
		size_t budget = MAX_NODES;
		rc = yaml_node_to_json(m, &doc, root, 0, &budget, &json);
		yaml_document_delete(&doc);
		if (rc)
			break;
		if (cJSON_IsNull(json)) { /* an empty document, e.g. a trailing "---" */
			cJSON_Delete(json);
			continue;
		}
		if ((rc = add_root(m, json, line)))
			break;
	}
	yaml_parser_delete(&parser);
	return rc;
}

/* ---- JSON ---- */

static int line_of(const char *text, const char *at)
{
	int line = 1;
	for (const char *p = text; p < at; p++)
		if (*p == '\n')
			line++;
	return line;
}

static int parse_json(dp_manifest *m, const char *text, size_t len)
{
	const char *p = text, *end = text + len;
	for (;;) {
		while (p < end && isspace((unsigned char)*p))
			p++;
		if (p >= end)
			return 0;
		const char *stop = NULL;
		cJSON *v = cJSON_ParseWithLengthOpts(p, (size_t)(end - p), &stop, 0);
		if (!v) {
			const char *at = cJSON_GetErrorPtr();
			if (!at || at < text || at > end)
				at = p;
			size_t n = 0;
			while (n < 20 && at + n < end && at[n] != '\n' && at[n] != '\r')
				n++;
			return dp_error_set(DP_EUSAGE, "%s:%d: bad JSON near \"%.*s\"", m->source,
			                    line_of(text, at), (int)n, at);
		}
		int line = line_of(text, p);
		int rc;
		if (cJSON_IsArray(v)) {
			rc = 0;
			while (!rc && cJSON_GetArraySize(v) > 0)
				rc = add_root(m, cJSON_DetachItemFromArray(v, 0), line);
			cJSON_Delete(v);
		} else {
			rc = add_root(m, v, line);
		}
		if (rc)
			return rc;
		p = stop;
	}
}

int dp_manifest_parse(dp_manifest **out, const char *text, size_t len, const char *source)
{
	int rc = 0;
	dp_manifest *m = calloc(1, sizeof(*m));
	*out = NULL;
	if (!m || !(m->source = dp_strdup(source ? source : "-"))) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	if (memchr(text, 0, len)) {
		rc = dp_error_set(DP_EUSAGE, "%s: not text (contains a NUL byte)", m->source);
		goto out;
	}
	size_t i = 0;
	while (i < len && isspace((unsigned char)text[i]))
		i++;
	if (i < len && (text[i] == '{' || text[i] == '['))
		rc = parse_json(m, text, len);
	else
		rc = parse_yaml(m, text, len);
	if (rc)
		goto out;
	if (m->n == 0) {
		rc = dp_error_set(DP_EUSAGE, "%s: no document found", m->source);
		goto out;
	}
	*out = m;
	m = NULL;
out:
	dp_manifest_free(m);
	return rc;
}

int dp_manifest_load(dp_manifest **out, const char *path)
{
	dp_buf b = {0};
	int rc = 0;
	bool is_stdin = strcmp(path, "-") == 0;
	int fd = is_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
	*out = NULL;
	if (fd < 0)
		return dp_error_errno(errno == ENOENT ? DP_ENOTFOUND : DP_ERROR, errno,
		                      "cannot open \"%s\"", path);
	for (;;) {
		if ((rc = dp_buf_reserve(&b, 65536)))
			goto out;
		ssize_t n = read(fd, b.data + b.len, b.cap - b.len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = dp_error_errno(DP_ERROR, errno, "cannot read \"%s\"", path);
			goto out;
		}
		if (n == 0)
			break;
		b.len += (size_t)n;
		if (b.len > MAX_INPUT) {
			rc = dp_error_set(DP_EUSAGE, "\"%s\" is larger than 16 MiB", path);
			goto out;
		}
	}
	rc = dp_manifest_parse(out, b.len ? (const char *)b.data : "", b.len, path);
out:
	if (!is_stdin && fd >= 0)
		close(fd);
	dp_buf_free(&b);
	return rc;
}

/* ---- canonical JSON and YAML output ---- */

void dp_json_sort(cJSON *v)
{
	if (!v)
		return;
	for (cJSON *c = v->child; c; c = c->next)
		dp_json_sort(c);
	if (!cJSON_IsObject(v) || !v->child)
		return;
	/* Insertion sort of the child list by key (objects are small). */
	cJSON *sorted = NULL;
	cJSON *c = v->child;
	while (c) {
		cJSON *next = c->next;
		cJSON **pp = &sorted;
		while (*pp && strcmp((*pp)->string, c->string) <= 0)
			pp = &(*pp)->next;
		c->next = *pp;
		*pp = c;
		c = next;
	}
	/* Fix the prev links; cJSON keeps child->prev pointing at the tail. */
	cJSON *prev = NULL;
	for (c = sorted; c; c = c->next) {
		c->prev = prev;
		prev = c;
	}
	sorted->prev = prev;
	v->child = sorted;
}

static bool yaml_plain_ok(const char *s)
{
	if (!*s || isspace((unsigned char)s[0]) || isspace((unsigned char)s[strlen(s) - 1]))
		return false;
	if (strchr("-?:,[]{}#&*!|>'\"%@`~", s[0]))
		return false;
	/* Quote what other YAML readers might take for a number, a boolean
	 * or a timestamp (YAML 1.1: yes/no/on/off/y/n; hex, octal, .5, +1,
	 * 1:20, 2026-05-07T09:20:00Z); "7d" or "12h" stay plain. */
	static const char *const words[] = {"yes", "no", "on", "off", "y", "n", NULL};
	for (int i = 0; words[i]; i++)
		if (strcasecmp(s, words[i]) == 0)
			return false;
	if (isdigit((unsigned char)s[0]) || s[0] == '+' || s[0] == '.') {
		/* Number-like: digits, hex, exponents, times (1:20, dates). */
		if (strspn(s, "0123456789abcdefABCDEFxXoO_.:+-TZtz ") == strlen(s))
			return false;
	}
	cJSON *probe = plain_scalar(s);
	bool str = cJSON_IsString(probe);
	cJSON_Delete(probe);
	if (!str)
		return false; /* would read back as a number, bool or null */
	for (const char *p = s; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c < 0x20 || c == 0x7f)
			return false;
		if (c == ':' && (p[1] == ' ' || p[1] == 0))
			return false;
		if (c == '#' && p > s && p[-1] == ' ')
			return false;
	}
	return true;
}

static int yaml_scalar(dp_buf *out, const cJSON *v)
{
	if (cJSON_IsString(v)) {
		if (yaml_plain_ok(v->valuestring))
			return dp_buf_appendf(out, "%s", v->valuestring);
		/* A JSON string is a valid YAML double-quoted scalar. */
		char *q = cJSON_PrintUnformatted(v);
		if (!q)
			return dp_error_set(DP_ERROR, "out of memory");
		int rc = dp_buf_appendf(out, "%s", q);
		cJSON_free(q);
		return rc;
	}
	char *t = cJSON_PrintUnformatted(v);
	if (!t)
		return dp_error_set(DP_ERROR, "out of memory");
	int rc = dp_buf_appendf(out, "%s", t);
	cJSON_free(t);
	return rc;
}

static bool is_empty_container(const cJSON *v)
{
	return (cJSON_IsObject(v) || cJSON_IsArray(v)) && !v->child;
}

int dp_json_to_yaml(dp_buf *out, const cJSON *v, int indent)
{
	int rc = 0;
	if (cJSON_IsObject(v)) {
		for (const cJSON *c = v->child; c && !rc; c = c->next) {
			cJSON key = {0};
			key.type = cJSON_String;
			key.valuestring = c->string;
			if ((rc = dp_buf_appendf(out, "%*s", indent, "")) ||
			    (rc = yaml_scalar(out, &key)))
				break;
			if (is_empty_container(c))
				rc = dp_buf_appendf(out, ": %s\n", cJSON_IsObject(c) ? "{}" : "[]");
			else if (cJSON_IsObject(c) || cJSON_IsArray(c))
				rc = dp_buf_appendf(out, ":\n") ||
				     dp_json_to_yaml(out, c, indent + (cJSON_IsArray(c) ? 0 : 2));
			else
				rc = dp_buf_appendf(out, ": ") || yaml_scalar(out, c) ||
				     dp_buf_appendf(out, "\n");
		}
	} else if (cJSON_IsArray(v)) {
		for (const cJSON *c = v->child; c && !rc; c = c->next) {
			if ((rc = dp_buf_appendf(out, "%*s- ", indent, "")))
				break;
			if (is_empty_container(c)) {
				rc = dp_buf_appendf(out, "%s\n", cJSON_IsObject(c) ? "{}" : "[]");
			} else if (cJSON_IsObject(c)) {
				/* First key on the dash line, the rest aligned under it. */
				dp_buf sub = {0};
				rc = dp_json_to_yaml(&sub, c, indent + 2);
				if (!rc)
					rc = dp_buf_append(out, sub.data + indent + 2,
					                   sub.len - (size_t)indent - 2);
				dp_buf_free(&sub);
			} else if (cJSON_IsArray(c)) {
				rc = dp_buf_appendf(out, "\n") ||
				     dp_json_to_yaml(out, c, indent + 2);
			} else {
				rc = yaml_scalar(out, c) || dp_buf_appendf(out, "\n");
			}
		}
	} else {
		rc = dp_buf_appendf(out, "%*s", indent, "") || yaml_scalar(out, v) ||
		     dp_buf_appendf(out, "\n");
	}
	return rc ? DP_ERROR : 0;
}

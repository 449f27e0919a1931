/*
 * The S3 transport's pure helpers (see s3_int.h): percent-encoding and the
 * canonical query, a small XML reader, credentials and address parsing.
 *
 * The XML reader handles exactly what S3 sends: a prolog, elements without
 * attributes we care about, text with the five predefined entities and
 * numeric character references, CDATA and comments. It is bounded (depth 16,
 * path 256 bytes, the document length given) and refuses DOCTYPE, so a
 * hostile server cannot make it expand entities or recurse.
 *
 * Secrets read here live only in s3_cred; lines of the credentials file are
 * wiped from the stack buffer after parsing.
 */
#include "s3_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dp/crypto.h"
#include "dp/error.h"

/* ---- percent-encoding and query ---- */

static bool unreserved(unsigned char c)
{
	return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

int s3_uri_encode(dp_buf *out, const char *s, size_t n, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	int rc = dp_buf_reserve(out, n * 3 + 1);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (unreserved(c) || (keep_slash && c == '/')) {
			out->data[out->len++] = c;
		} else {
			out->data[out->len++] = '%';
			out->data[out->len++] = (uint8_t)hex[c >> 4];
			out->data[out->len++] = (uint8_t)hex[c & 15];
		}
	}
	out->data[out->len] = 0;
	return 0;
}

/* Sorting compares encoded forms; encoding preserves the order of unreserved
 * ASCII but not of everything else, so encode first, then sort. */
typedef struct enc_param {
	char *name;
	char *value;
} enc_param;

static int enc_cmp(const void *a, const void *b)
{
	const enc_param *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : strcmp(x->value, y->value);
}

static char *encode_dup(const char *s)
{
	dp_buf b = {0};
	if (s3_uri_encode(&b, s ? s : "", s ? strlen(s) : 0, false) < 0) {
		dp_buf_free(&b);
		return NULL;
	}
	return (char *)b.data;
}

int s3_query_build(dp_buf *out, s3_param *params, size_t n)
{
	int rc = 0;
	enc_param *e = calloc(n ? n : 1, sizeof(*e));
	if (!e)
		return dp_error_set(DP_ERROR, "out of memory building an s3 query");
	for (size_t i = 0; i < n; i++) {
		e[i].name = encode_dup(params[i].name);
		e[i].value = encode_dup(params[i].value);
		if (!e[i].name || !e[i].value) {
			rc = dp_error_set(DP_ERROR, "out of memory building an s3 query");
			goto out;
		}
	}
	qsort(e, n, sizeof(*e), enc_cmp);
	for (size_t i = 0; i < n; i++) {
		rc = dp_buf_appendf(out, "%s%s=%s", i ? "&" : "", e[i].name, e[i].value);
		if (rc < 0)
			goto out;
	}
	if (n == 0)
		rc = dp_buf_reserve(out, 1);
	if (rc == 0)
		out->data[out->len] = 0;
out:
	for (size_t i = 0; i < n; i++) {
		free(e[i].name);
		free(e[i].value);
	}
	free(e);
	return rc;
}

/* ---- XML ---- */

#define XML_MAX_DEPTH 16
#define XML_MAX_PATH 256

typedef struct xml_state {
	const char *p, *end;
	char path[XML_MAX_PATH];
	size_t plen;
	size_t marks[XML_MAX_DEPTH]; /* plen before each open element */
	int depth;
	dp_buf text; /* text of the innermost open element */
} xml_state;

static int xml_bad(const char *what)
{
	return dp_error_set(DP_ECORRUPT, "malformed xml from the s3 server: %s", what);
}

static bool name_char(unsigned char c)
{
	return isalnum(c) || c == '_' || c == '-' || c == '.' || c == ':' || c >= 0x80;
}

/* Appends the UTF-8 encoding of code point cp. */
static int put_utf8(dp_buf *b, unsigned long cp)
{
	uint8_t u[4];
	size_t n;
	if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return xml_bad("bad character reference");
	if (cp < 0x80) {
		u[0] = (uint8_t)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (uint8_t)(0xC0 | (cp >> 6));
		u[1] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (uint8_t)(0xE0 | (cp >> 12));
		u[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
		u[2] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 3;
	} else {
		u[0] = (uint8_t)(0xF0 | (cp >> 18));
		u[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
		u[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
		u[3] = (uint8_t)(0x80 | (cp & 0x3F));
		n = 4;
	}
	return dp_buf_append(b, u, n);
}

/* Decodes text s[0..n) (entities) into b. */
static int xml_text(dp_buf *b, const char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		if (s[i] != '&') {
			size_t j = i;
			while (j < n && s[j] != '&')
				j++;
			int rc = dp_buf_append(b, s + i, j - i);
			if (rc < 0)
				return rc;
			i = j;
			continue;
		}
		const char *semi = memchr(s + i, ';', n - i);
		if (!semi || semi - (s + i) > 12)
			return xml_bad("unterminated entity");
		size_t elen = (size_t)(semi - (s + i)) + 1;
		const char *ent = s + i;
		static const struct {
			const char *name;
			char c;
		} named[] = {{"&amp;", '&'},
		             {"&lt;", '<'},
		             {"&gt;", '>'},
		             {"&quot;", '"'},
		             {"&apos;", '\''}};
		int rc = 1;
		for (size_t k = 0; k < sizeof(named) / sizeof(named[0]); k++) {
			if (strlen(named[k].name) == elen &&
			    memcmp(ent, named[k].name, elen) == 0) {
				rc = dp_buf_append(b, &named[k].c, 1);
				break;
			}
		}
		if (rc == 1) {
			if (elen < 4 || ent[1] != '#')
				return xml_bad("unknown entity");
			bool hexa = ent[2] == 'x' || ent[2] == 'X';
			const char *d = ent + (hexa ? 3 : 2);
			unsigned long cp = 0;
			if (d >= semi)
				return xml_bad("bad character reference");
			for (; d < semi; d++) {
				int v;
				if (*d >= '0' && *d <= '9')
					v = *d - '0';
				else if (hexa && isxdigit((unsigned char)*d))
					v = tolower((unsigned char)*d) - 'a' + 10;
				else
					return xml_bad("bad character reference");
				cp = cp * (hexa ? 16 : 10) + (unsigned long)v;
				if (cp > 0x10FFFF)
					return xml_bad("bad character reference");
			}
			rc = put_utf8(b, cp);
		}
		if (rc < 0)
			return rc;
		i += elen;
	}
	return 0;
}

static const char *find(const char *p, const char *end, const char *needle)
{
	size_t n = strlen(needle);
	while (p + n <= end) {
		if (memcmp(p, needle, n) == 0)
			return p;
		p++;
	}
	return NULL;
}

static int xml_open(xml_state *x, const char *name, size_t n)
{
	if (x->depth >= XML_MAX_DEPTH)
		return xml_bad("nesting too deep");
	size_t need = (x->plen ? 1 : 0) + n;
	if (x->plen + need + 1 > XML_MAX_PATH)
		return xml_bad("element path too long");
	x->marks[x->depth++] = x->plen;
	if (x->plen)
		x->path[x->plen++] = '/';
	memcpy(x->path + x->plen, name, n);
	x->plen += n;
	x->path[x->plen] = 0;
	dp_buf_reset(&x->text);
	return 0;
}

static int xml_close(xml_state *x, const char *name, size_t n, s3_xml_cb cb, void *arg)
{
	if (x->depth == 0)
		return xml_bad("closing tag without an open element");
	size_t start = x->marks[x->depth - 1];
	size_t off = start ? start + 1 : 0;
	if (x->plen - off != n || memcmp(x->path + off, name, n) != 0)
		return xml_bad("mismatched closing tag");
	int rc = dp_buf_reserve(&x->text, 1);
	if (rc < 0)
		return rc;
	x->text.data[x->text.len] = 0;
	rc = cb(x->path, (const char *)x->text.data, x->text.len, arg);
	x->depth--;
	x->plen = start;
	x->path[x->plen] = 0;
	dp_buf_reset(&x->text);
	return rc;
}

int s3_xml_parse(const char *doc, size_t len, s3_xml_cb cb, void *arg)
{
	xml_state x = {.p = doc, .end = doc + len};
	int rc = 0;
	bool seen_root = false;
	while (x.p < x.end) {
		if (*x.p != '<') {
			const char *lt = memchr(x.p, '<', (size_t)(x.end - x.p));
			const char *stop = lt ? lt : x.end;
			if (x.depth > 0) {
				rc = xml_text(&x.text, x.p, (size_t)(stop - x.p));
				if (rc < 0)
					goto out;
			} else {
				for (const char *q = x.p; q < stop; q++)
					if (!isspace((unsigned char)*q)) {
						rc = xml_bad("text outside the root element");
						goto out;
					}
			}
			x.p = stop;
			continue;
		}
		const char *q = x.p + 1;
		if (q >= x.end) {
			rc = xml_bad("truncated tag");
			goto out;
		}
		if (*q == '?') {
			const char *e = find(q, x.end, "?>");
			if (!e) {
				rc = xml_bad("unterminated processing instruction");
				goto out;
			}
			x.p = e + 2;
		} else if (x.end - q >= 3 && memcmp(q, "!--", 3) == 0) {
			const char *e = find(q + 3, x.end, "-->");
			if (!e) {
				rc = xml_bad("unterminated comment");
				goto out;
			}
			x.p = e + 3;
		} else if (x.end - q >= 8 && memcmp(q, "![CDATA[", 8) == 0) {
			const char *e = find(q + 8, x.end, "]]>");
			if (!e || x.depth == 0) {
				rc = xml_bad("bad CDATA section");
				goto out;
			}
			rc = dp_buf_append(&x.text, q + 8, (size_t)(e - (q + 8)));
			if (rc < 0)
				goto out;
			x.p = e + 3;
		} else if (*q == '!') {
			rc = xml_bad("DOCTYPE and declarations are not accepted");
			goto out;
		} else {
			bool closing = *q == '/';
			if (closing)
				q++;
			const char *name = q;
			while (q < x.end && name_char((unsigned char)*q))
				q++;
			size_t n = (size_t)(q - name);
			if (n == 0) {
				rc = xml_bad("empty tag name");
				goto out;
			}
			/* Skip attributes, honouring quotes. */
			char quote = 0;
			while (q < x.end && (quote || (*q != '>'))) {
				if (quote && *q == quote)
					quote = 0;
				else if (!quote && (*q == '"' || *q == '\''))
					quote = *q;
				else if (!quote && *q == '<')
					break;
				q++;
			}
			if (q >= x.end || *q != '>') {
				rc = xml_bad("unterminated tag");
				goto out;
			}
			bool empty = !closing && q[-1] == '/';
			if (closing) {
				rc = xml_close(&x, name, n, cb, arg);
			} else {
				if (x.depth == 0 && seen_root) {
					rc = xml_bad("more than one root element");
					goto out;
				}
				seen_root = true;
				rc = xml_open(&x, name, n);
				if (rc == 0 && empty)
					rc = xml_close(&x, name, n, cb, arg);
			}
			if (rc != 0)
				goto out;
			x.p = q + 1;
		}
	}
	if (x.depth != 0 || !seen_root)
		rc = xml_bad(seen_root ? "document ends inside an element" : "no root element");
out:
	dp_buf_free(&x.text);
	return rc;
}

/* ---- credentials ---- */

static void wipe_str(char **s)
{
	if (*s) {
		dp_wipe(*s, strlen(*s));
		free(*s);
		*s = NULL;
	}
}

void s3_cred_wipe(s3_cred *c)
{
	if (!c)
		return;
	wipe_str(&c->key_id);
	wipe_str(&c->secret);
	wipe_str(&c->token);
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		s[--n] = 0;
	return s;
}

/* Reads [profile] from an INI-style AWS credentials file. Returns 0 when
 * both keys were found, DP_ENOTFOUND when the file has no such profile or
 * keys, DP_ERROR when it cannot be read. */
static int cred_from_file(s3_cred *out, const char *path, const char *profile)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return dp_error_errno(DP_ERROR, errno, "cannot read the s3 credentials file \"%s\"",
		                      path);
	char line[2048];
	bool in = false, found = false;
	int rc = 0;
	while (fgets(line, sizeof(line), f)) {
		char *s = trim(line);
		if (*s == '#' || *s == ';' || *s == 0)
			continue;
		if (*s == '[') {
			char *e = strchr(s, ']');
			if (e) {
				*e = 0;
				char *name = trim(s + 1);
				if (strncmp(name, "profile ", 8) == 0)
					name = trim(name + 8);
				in = strcmp(name, profile) == 0;
				found |= in;
			}
			continue;
		}
		if (!in)
			continue;
		char *eq = strchr(s, '=');
		if (!eq)
			continue;
		*eq = 0;
		char *k = trim(s), *v = trim(eq + 1);
		char **dst = NULL;
		if (strcasecmp(k, "aws_access_key_id") == 0)
			dst = &out->key_id;
		else if (strcasecmp(k, "aws_secret_access_key") == 0)
			dst = &out->secret;
		else if (strcasecmp(k, "aws_session_token") == 0)
			dst = &out->token;
		if (dst) {
			wipe_str(dst);
			*dst = strdup(v);
			if (!*dst) {
				rc = dp_error_set(DP_ERROR, "out of memory");
				break;
			}
		}
	}
	dp_wipe(line, sizeof(line));
	fclose(f);
	if (rc < 0)
		return rc;
	if (!out->key_id || !out->secret) {
		s3_cred_wipe(out);
		return dp_error_set(DP_ENOTFOUND,
		                    "the s3 credentials file \"%s\" has %s \"%s\" with "
		                    "aws_access_key_id and aws_secret_access_key: add it or set "
		                    "AWS_PROFILE",
		                    path, found ? "no keys in profile" : "no profile", profile);
	}
	snprintf(out->source, sizeof(out->source), "credentials file \"%s\" [%s]", path, profile);
	return 0;
}

int s3_cred_load(s3_cred *out, const char *file)
{
	memset(out, 0, sizeof(*out));
	const char *id = getenv("AWS_ACCESS_KEY_ID");
	const char *secret = getenv("AWS_SECRET_ACCESS_KEY");
	if (id && *id && secret && *secret) {
		const char *token = getenv("AWS_SESSION_TOKEN");
		out->key_id = strdup(id);
		out->secret = strdup(secret);
		out->token = token && *token ? strdup(token) : NULL;
		if (!out->key_id || !out->secret || (token && *token && !out->token)) {
			s3_cred_wipe(out);
			return dp_error_set(DP_ERROR, "out of memory");
		}
		snprintf(out->source, sizeof(out->source), "environment");
		return 0;
	}
	if ((id && *id) != (secret && *secret))
		return dp_error_set(DP_EAUTH,
		                    "only one of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
		                    "is set: set both, or neither to use a credentials file");
	const char *profile = getenv("AWS_PROFILE");
	if (!profile || !*profile)
		profile = "default";
	if (file && *file)
		return cred_from_file(out, file, profile);
	const char *env_file = getenv("AWS_SHARED_CREDENTIALS_FILE");
	if (env_file && *env_file)
		return cred_from_file(out, env_file, profile);
	const char *home = getenv("HOME");
	if (home && *home) {
		char path[4096];
		int n = snprintf(path, sizeof(path), "%s/.aws/credentials", home);
		if (n > 0 && (size_t)n < sizeof(path)) {
			FILE *f = fopen(path, "r");
			if (f) {
				fclose(f);
				return cred_from_file(out, path, profile);
			}
		}
	}
	return dp_error_set(DP_EAUTH,
	                    "no s3 credentials: set AWS_ACCESS_KEY_ID and "
	                    "AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary "
	                    "keys), or name a credentials file (AWS_SHARED_CREDENTIALS_FILE)");
}

/* ---- addresses ---- */

void s3_addr_free(s3_addr *a)
{
	if (!a)
		return;
	free(a->bucket);
	free(a->prefix);
	free(a->scheme);
	free(a->host);
	free(a->base);
	free(a->region);
	memset(a, 0, sizeof(*a));
}

static char *dupn(const char *s, size_t n)
{
	char *d = malloc(n + 1);
	if (d) {
		memcpy(d, s, n);
		d[n] = 0;
	}
	return d;
}

static bool valid_bucket(const char *b, size_t n)
{
	if (n < 3 || n > 63)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)b[i];
		if (!(islower(c) || isdigit(c) || c == '-' || c == '.'))
			return false;
	}
	return isalnum((unsigned char)b[0]) && isalnum((unsigned char)b[n - 1]) &&
	       !memmem(b, n, "..", 2);
}

static bool valid_region(const char *r)
{
	if (!*r || strlen(r) > 64)
		return false;
	for (; *r; r++)
		if (!(islower((unsigned char)*r) || isdigit((unsigned char)*r) || *r == '-'))
			return false;
	return true;
}

/* host[:port] is an IPv4 or bracketed IPv6 literal. */
static bool host_is_ip(const char *h)
{
	if (h[0] == '[')
		return true;
	size_t n = strcspn(h, ":");
	for (size_t i = 0; i < n; i++)
		if (!isdigit((unsigned char)h[i]) && h[i] != '.')
			return false;
	return n > 0;
}

int s3_addr_parse(s3_addr *out, const char *url, const char *endpoint, const char *region,
                  const char *style)
{
	memset(out, 0, sizeof(*out));
	int rc = 0;
	if (strncasecmp(url, "s3://", 5) != 0)
		return dp_error_set(DP_EUSAGE,
		                    "\"%s\" is not an s3 address: use s3://BUCKET/PREFIX", url);
	const char *b = url + 5;
	const char *slash = strchr(b, '/');
	size_t blen = slash ? (size_t)(slash - b) : strlen(b);
	if (!valid_bucket(b, blen))
		return dp_error_set(
		    DP_EUSAGE,
		    "bad bucket name in \"%s\": 3 to 63 lower-case letters, digits, "
		    "'-' and '.', starting and ending with a letter or digit",
		    url);
	/* Prefix: trim slashes at both ends, refuse empty and dot segments. */
	const char *p = slash ? slash : b + blen;
	while (*p == '/')
		p++;
	size_t plen = strlen(p);
	while (plen > 0 && p[plen - 1] == '/')
		plen--;
	for (size_t i = 0; i < plen;) {
		size_t j = i;
		while (j < plen && p[j] != '/')
			j++;
		size_t seg = j - i;
		if (seg == 0 || (seg == 1 && p[i] == '.') ||
		    (seg == 2 && p[i] == '.' && p[i + 1] == '.'))
			return dp_error_set(
			    DP_EUSAGE, "bad prefix in \"%s\": no empty, \".\" or \"..\" segments",
			    url);
		i = j + 1;
	}
	if (memchr(p, '\\', plen))
		return dp_error_set(DP_EUSAGE, "bad prefix in \"%s\": no backslashes", url);

	if (!region || !*region)
		region = getenv("AWS_REGION");
	if (!region || !*region)
		region = getenv("AWS_DEFAULT_REGION");
	if (!region || !*region)
		region = "us-east-1";
	if (!valid_region(region))
		return dp_error_set(DP_EUSAGE, "bad s3 region \"%s\": e.g. us-east-1", region);

	out->bucket = dupn(b, blen);
	out->prefix = malloc(plen + 2);
	out->region = strdup(region);
	if (!out->bucket || !out->prefix || !out->region) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	memcpy(out->prefix, p, plen);
	if (plen)
		out->prefix[plen++] = '/';
	out->prefix[plen] = 0;

	bool aws = !endpoint || !*endpoint;
	if (aws) {
		out->scheme = strdup("https");
		dp_buf h = {0};
		rc = dp_buf_appendf(&h, "s3.%s.amazonaws.com", region);
		out->host = (char *)h.data;
		out->base = strdup("");
		if (rc < 0)
			goto out;
	} else {
		const char *e = endpoint, *sep = strstr(endpoint, "://");
		if (sep) {
			size_t sl = (size_t)(sep - e);
			if (!((sl == 4 && strncasecmp(e, "http", 4) == 0) ||
			      (sl == 5 && strncasecmp(e, "https", 5) == 0))) {
				rc = dp_error_set(DP_EUSAGE,
				                  "bad s3 endpoint \"%s\": use https://HOST[:PORT] "
				                  "(or http:// to turn TLS off)",
				                  endpoint);
				goto out;
			}
			out->scheme = dupn(e, sl);
			for (char *c = out->scheme; c && *c; c++)
				*c = (char)tolower((unsigned char)*c);
			e = sep + 3;
		} else {
			out->scheme = strdup("https");
		}
		size_t hl = strcspn(e, "/?#");
		if (hl == 0 || e[hl] == '?' || e[hl] == '#' || memchr(e, '@', hl)) {
			rc = dp_error_set(DP_EUSAGE,
			                  "bad s3 endpoint \"%s\": use https://HOST[:PORT][/PATH]",
			                  endpoint);
			goto out;
		}
		for (size_t i = 0; i < hl; i++) {
			unsigned char c = (unsigned char)e[i];
			if (!(isalnum(c) || c == '.' || c == '-' || c == ':' || c == '[' ||
			      c == ']')) {
				rc = dp_error_set(DP_EUSAGE, "bad host in s3 endpoint \"%s\"",
				                  endpoint);
				goto out;
			}
		}
		out->host = dupn(e, hl);
		const char *path = e + hl;
		size_t pl = strlen(path);
		while (pl > 0 && path[pl - 1] == '/')
			pl--;
		out->base = dupn(path, pl);
	}
	if (!out->scheme || !out->host || !out->base) {
		rc = dp_error_set(DP_ERROR, "out of memory");
		goto out;
	}
	if (!style || !*style)
		out->virtual_host = aws;
	else if (strcmp(style, "virtual") == 0)
		out->virtual_host = true;
	else if (strcmp(style, "path") == 0)
		out->virtual_host = false;
	else {
		rc = dp_error_set(DP_EUSAGE, "bad s3 uri style \"%s\": use \"path\" or \"virtual\"",
		                  style);
		goto out;
	}
	if (out->virtual_host && strchr(out->bucket, '.') && strcmp(out->scheme, "https") == 0) {
		rc = dp_error_set(
		    DP_EUSAGE,
		    "bucket \"%s\" has a '.' in its name, which breaks TLS certificate "
		    "checks with virtual-host addressing: use --s3-uri-style path",
		    out->bucket);
		goto out;
	}
	if (out->virtual_host && host_is_ip(out->host)) {
		rc = dp_error_set(DP_EUSAGE,
		                  "s3 endpoint \"%s\" is an IP address, so the bucket cannot go in "
		                  "the host name: use --s3-uri-style path",
		                  out->host);
		goto out;
	}
out:
	if (rc < 0)
		s3_addr_free(out);
	return rc;
}

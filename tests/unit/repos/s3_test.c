/*
 * Unit tests of the S3 transport (repos/s3/) without an S3 server: the
 * percent-encoding, canonical query, XML reader, credentials and address
 * parsing; the SigV4 signatures libcurl makes for us, checked by an
 * independent verifier (itself checked against AWS's published example);
 * and the error paths against the scripted HTTP responder: retries, folded
 * messages, 403 and missing-bucket fail-fast, a dropped body, a stalled
 * response, ranged reads, paging, batch delete and the create probe.
 */
#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "../../../repos/s3/s3_int.h"
#include "dp/crypto.h"
#include "dp/error.h"
#include "dp/sys/backend.h"
#include "../../harness/dp_test.h"
#include "../../harness/http_responder.h"

/* ---- an independent SigV4 verifier ---- */

static void hexs(char *out, const unsigned char *d, size_t n)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void hmac(unsigned char out[32], const void *key, size_t klen, const char *msg)
{
	unsigned int len = 32;
	HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), out, &len);
}

/* Lower-cased header name -> trimmed value, from a request head. */
static bool get_header(const char *head, const char *name, char *out, size_t n)
{
	size_t nl = strlen(name);
	for (const char *p = strstr(head, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
		const char *line = p + 2;
		if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
			const char *v = line + nl + 1;
			while (*v == ' ')
				v++;
			const char *e = strstr(v, "\r\n");
			size_t l = e ? (size_t)(e - v) : strlen(v);
			while (l && v[l - 1] == ' ')
				l--;
			if (l >= n)
				return false;
			memcpy(out, v, l);
			out[l] = 0;
			return true;
		}
	}
	return false;
}

static bool canonical_component(const char *s, bool slash_ok)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '.' || c == '_' || c == '~' || (slash_ok && c == '/'))
			continue;
		if (c == '%' && strchr("0123456789ABCDEF", s[1]) && s[1] &&
		    strchr("0123456789ABCDEF", s[2]) && s[2]) {
			s += 2;
			continue;
		}
		return false;
	}
	return true;
}

/* Verifies the request's AWS SigV4 Authorization header with secret;
 * returns NULL if it is right, else why not. Checks also that the path and
 * query are in canonical form (which is what S3 will compute) and that the
 * payload hash matches the body. */
static const char *sigv4_check(const char *head, const char *body, size_t blen, const char *secret)
{
	static char why[512];
	char method[16], target[4096], auth[1024], date[64], hash[128];
	if (sscanf(head, "%15s %4095s", method, target) != 2)
		return "no request line";
	if (!get_header(head, "authorization", auth, sizeof(auth)))
		return "no Authorization header";
	if (!get_header(head, "x-amz-date", date, sizeof(date)))
		return "no x-amz-date";
	if (!get_header(head, "x-amz-content-sha256", hash, sizeof(hash)))
		return "no x-amz-content-sha256";
	if (body) {
		unsigned char d[32];
		char hx[65];
		SHA256((const unsigned char *)body, blen, d);
		hexs(hx, d, 32);
		if (strcmp(hx, hash) != 0)
			return "x-amz-content-sha256 is not the SHA-256 of the body";
	}
	char cred[256], signed_h[512], sig[80];
	const char *c = strstr(auth, "Credential="), *sh = strstr(auth, "SignedHeaders="),
	           *sg = strstr(auth, "Signature=");
	if (strncmp(auth, "AWS4-HMAC-SHA256 ", 17) != 0 || !c || !sh || !sg)
		return "malformed Authorization";
	if (sscanf(c, "Credential=%255[^,]", cred) != 1 ||
	    sscanf(sh, "SignedHeaders=%511[^,]", signed_h) != 1 ||
	    sscanf(sg, "Signature=%79[0-9a-f]", sig) != 1)
		return "malformed Authorization fields";
	char *scope = strchr(cred, '/');
	if (!scope)
		return "no credential scope";
	scope++;
	char sdate[16], region[64], service[32], term[32];
	if (sscanf(scope, "%15[^/]/%63[^/]/%31[^/]/%31s", sdate, region, service, term) != 4)
		return "bad credential scope";

	char *q = strchr(target, '?');
	const char *query = "";
	if (q) {
		*q = 0;
		query = q + 1;
	}
	if (!canonical_component(target, true))
		return "path is not canonically encoded";
	/* Query: sorted pairs, each part canonical. */
	char prev[1024] = "";
	char qcopy[4096];
	snprintf(qcopy, sizeof(qcopy), "%s", query);
	char *save = NULL;
	for (char *pair = strtok_r(qcopy, "&", &save); pair; pair = strtok_r(NULL, "&", &save)) {
		char *eq = strchr(pair, '=');
		if (!eq)
			return "query parameter without '='";
		*eq = 0;
		if (!canonical_component(pair, false) || !canonical_component(eq + 1, false))
			return "query is not canonically encoded";
		*eq = '=';
		if (strcmp(prev, pair) > 0)
			return "query is not sorted";
		snprintf(prev, sizeof(prev), "%s", pair);
	}
	/* Every x-amz-* header must be signed, and host. */
	if (!strstr(signed_h, "host"))
		return "host is not signed";
	for (const char *p = strstr(head, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
		if (strncasecmp(p + 2, "x-amz-", 6) == 0) {
			char name[64];
			size_t l = strcspn(p + 2, ":");
			if (l >= sizeof(name))
				return "long header";
			for (size_t i = 0; i < l; i++)
				name[i] = (char)tolower((unsigned char)p[2 + i]);
			name[l] = 0;
			if (!strstr(signed_h, name))
				return "an x-amz header is not signed";
		}
	}
	char canon[16384];
	int n = snprintf(canon, sizeof(canon), "%s\n%s\n%s\n", method, target, query);
	char shcopy[512];
	snprintf(shcopy, sizeof(shcopy), "%s", signed_h);
	for (char *h = strtok_r(shcopy, ";", &save); h; h = strtok_r(NULL, ";", &save)) {
		char v[2048];
		if (!get_header(head, h, v, sizeof(v)))
			return "a signed header is missing from the request";
		n += snprintf(canon + n, sizeof(canon) - (size_t)n, "%s:%s\n", h, v);
	}
	n += snprintf(canon + n, sizeof(canon) - (size_t)n, "\n%s\n%s", signed_h, hash);

	unsigned char d[32], k1[32], k2[32];
	char chex[65], sts[1024], key0[256], mine[65];
	SHA256((const unsigned char *)canon, strlen(canon), d);
	hexs(chex, d, 32);
	snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256\n%s\n%s\n%s", date, scope, chex);
	snprintf(key0, sizeof(key0), "AWS4%s", secret);
	hmac(k1, key0, strlen(key0), sdate);
	hmac(k2, k1, 32, region);
	hmac(k1, k2, 32, service);
	hmac(k2, k1, 32, term);
	hmac(k1, k2, 32, sts);
	hexs(mine, k1, 32);
	if (strcmp(mine, sig) != 0) {
		snprintf(why, sizeof(why), "signature mismatch; canonical request:\n%s", canon);
		return why;
	}
	return NULL;
}

START_TEST(t_sigv4_verifier_aws_example)
{
	/* The GET Object example of AWS's SigV4 documentation for S3. */
	const char *head =
	    "GET /test.txt HTTP/1.1\r\n"
	    "Host: examplebucket.s3.amazonaws.com\r\n"
	    "Authorization: AWS4-HMAC-SHA256 "
	    "Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
	    "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
	    "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41\r\n"
	    "Range: bytes=0-9\r\n"
	    "x-amz-content-sha256: "
	    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\r\n"
	    "x-amz-date: 20130524T000000Z";
	const char *secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
	const char *why = sigv4_check(head, "", 0, secret);
	ck_assert_msg(why == NULL, "%s", why);
	ck_assert_ptr_nonnull(sigv4_check(head, "", 0, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEz"));
	ck_assert_ptr_nonnull(sigv4_check(head, "x", 1, secret)); /* payload hash */
}
END_TEST

/* ---- pure helpers ---- */

START_TEST(t_uri_encode)
{
	dp_buf b = {0};
	const char *s = "data/ab/AZaz09-._~ +%/é";
	ck_assert_int_eq(s3_uri_encode(&b, s, strlen(s), true), 0);
	ck_assert_str_eq((char *)b.data, "data/ab/AZaz09-._~%20%2B%25/%C3%A9");
	dp_buf_reset(&b);
	ck_assert_int_eq(s3_uri_encode(&b, "a/b", 3, false), 0);
	ck_assert_str_eq((char *)b.data, "a%2Fb");
	dp_buf_free(&b);
}
END_TEST

START_TEST(t_query_build)
{
	dp_buf b = {0};
	s3_param p[] = {{"prefix", "p/x y"},
	                {"list-type", "2"},
	                {"continuation-token", "1/ab+c=="},
	                {"delete", NULL}};
	ck_assert_int_eq(s3_query_build(&b, p, 4), 0);
	ck_assert_str_eq(
	    (char *)b.data,
	    "continuation-token=1%2Fab%2Bc%3D%3D&delete=&list-type=2&prefix=p%2Fx%20y");
	dp_buf_free(&b);
	/* Sorting is by the encoded name: '%' (0x25) sorts before letters. */
	dp_buf c = {0};
	s3_param q[] = {{"b", "1"}, {"a b", "2"}, {"a", "3"}};
	ck_assert_int_eq(s3_query_build(&c, q, 3), 0);
	ck_assert_str_eq((char *)c.data, "a=3&a%20b=2&b=1");
	dp_buf_free(&c);
}
END_TEST

typedef struct xml_log {
	char text[4096];
} xml_log;

static int xml_collect(const char *path, const char *text, size_t len, void *arg)
{
	xml_log *l = arg;
	size_t n = strlen(l->text);
	snprintf(l->text + n, sizeof(l->text) - n, "%s=%.*s|", path, (int)len, text);
	return 0;
}

START_TEST(t_xml_parse)
{
	const char *doc =
	    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	    "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
	    "<Name>b</Name><!-- a > comment -->"
	    "<Contents><Key>a&amp;b&lt;&#x41;&#66;&quot;</Key><Size>12</Size></Contents>"
	    "<Contents><Key><![CDATA[x<y]]></Key><Size>0</Size><Owner/></Contents>"
	    "<IsTruncated>false</IsTruncated></ListBucketResult>\n";
	xml_log l = {0};
	ck_assert_int_eq(s3_xml_parse(doc, strlen(doc), xml_collect, &l), 0);
	ck_assert_str_eq(l.text, "ListBucketResult/Name=b|"
	                         "ListBucketResult/Contents/Key=a&b<AB\"|"
	                         "ListBucketResult/Contents/Size=12|"
	                         "ListBucketResult/Contents=|"
	                         "ListBucketResult/Contents/Key=x<y|"
	                         "ListBucketResult/Contents/Size=0|"
	                         "ListBucketResult/Contents/Owner=|"
	                         "ListBucketResult/Contents=|"
	                         "ListBucketResult/IsTruncated=false|"
	                         "ListBucketResult=|");
}
END_TEST

START_TEST(t_xml_rejects)
{
	const char *bad[] = {
	    "<a><b></a></b>",
	    "<a>",
	    "<a></a><b></b>",
	    "<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>",
	    "<a>&unknown;</a>",
	    "<a>&#0;</a>",
	    "<a>&#x110000;</a>",
	    "<a>&amp</a>",
	    "text<a></a>",
	    "<a",
	    "",
	    "<a><b><c><d><e><f><g><h><i><j><k><l><m><n><o><p><q></q></p></o></n></m></l></k></"
	    "j></i></h></g></f></e></d></c></b></a>",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		xml_log l = {0};
		dp_error_clear();
		int rc = s3_xml_parse(bad[i], strlen(bad[i]), xml_collect, &l);
		ck_assert_msg(rc == DP_ECORRUPT, "accepted bad xml #%zu: %s", i, bad[i]);
		ck_assert_ptr_nonnull(strstr(dp_error_last(), "malformed xml"));
	}
	/* A truncated document: every prefix of a valid one is refused. */
	const char *doc = "<a><b>x</b><c>y</c></a>";
	for (size_t n = 0; n < strlen(doc); n++) {
		xml_log l = {0};
		ck_assert_int_eq(s3_xml_parse(doc, n, xml_collect, &l), DP_ECORRUPT);
	}
}
END_TEST

static void clear_aws_env(void)
{
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	unsetenv("AWS_SESSION_TOKEN");
	unsetenv("AWS_PROFILE");
	unsetenv("AWS_SHARED_CREDENTIALS_FILE");
	unsetenv("AWS_REGION");
	unsetenv("AWS_DEFAULT_REGION");
	setenv("HOME", dp_test_dir, 1);
}

START_TEST(t_cred_env_and_file)
{
	clear_aws_env();
	s3_cred c;
	ck_assert_int_eq(s3_cred_load(&c, NULL), DP_EAUTH);
	ck_assert_ptr_nonnull(strstr(dp_error_last(), "AWS_ACCESS_KEY_ID"));

	setenv("AWS_ACCESS_KEY_ID", "AKID", 1);
	ck_assert_int_eq(s3_cred_load(&c, NULL), DP_EAUTH); /* half set */
	setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-env", 1);
	setenv("AWS_SESSION_TOKEN", "tok", 1);
	ck_assert_int_eq(s3_cred_load(&c, NULL), 0);
	ck_assert_str_eq(c.key_id, "AKID");
	ck_assert_str_eq(c.secret, "s3cr3t-env");
	ck_assert_str_eq(c.token, "tok");
	s3_cred_wipe(&c);
	ck_assert_ptr_null(c.secret);

	clear_aws_env();
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/creds", dp_test_dir);
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs("# comment\n[default]\naws_access_key_id = DEF\naws_secret_access_key=defsecret\n"
	      "\n[profile other]\n aws_access_key_id=OTH \naws_secret_access_key = oth secret\n"
	      "aws_session_token=ot\n[empty]\nregion=x\n",
	      f);
	fclose(f);
	ck_assert_int_eq(s3_cred_load(&c, path), 0);
	ck_assert_str_eq(c.key_id, "DEF");
	ck_assert_str_eq(c.secret, "defsecret");
	ck_assert_ptr_null(c.token);
	s3_cred_wipe(&c);
	setenv("AWS_PROFILE", "other", 1);
	setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
	ck_assert_int_eq(s3_cred_load(&c, NULL), 0);
	ck_assert_str_eq(c.key_id, "OTH");
	ck_assert_str_eq(c.secret, "oth secret");
	ck_assert_str_eq(c.token, "ot");
	s3_cred_wipe(&c);
	setenv("AWS_PROFILE", "empty", 1);
	ck_assert_int_eq(s3_cred_load(&c, NULL), DP_ENOTFOUND);
	ck_assert_ptr_null(strstr(dp_error_last(), "oth secret"));
	ck_assert_ptr_null(strstr(dp_error_last(), "defsecret"));
	setenv("AWS_PROFILE", "nope", 1);
	ck_assert_int_eq(s3_cred_load(&c, NULL), DP_ENOTFOUND);
	ck_assert_ptr_nonnull(strstr(dp_error_last(), "no profile \"nope\""));
	/* ~/.aws/credentials is the default file. */
	clear_aws_env();
	char dir[PATH_MAX + 8];
	snprintf(dir, sizeof(dir), "%s/.aws", dp_test_dir);
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	char home_file[PATH_MAX + 32];
	snprintf(home_file, sizeof(home_file), "%s/credentials", dir);
	ck_assert_int_eq(rename(path, home_file), 0);
	ck_assert_int_eq(s3_cred_load(&c, NULL), 0);
	ck_assert_str_eq(c.key_id, "DEF");
	s3_cred_wipe(&c);
}
END_TEST

START_TEST(t_addr_parse)
{
	clear_aws_env();
	s3_addr a;
	ck_assert_int_eq(s3_addr_parse(&a, "s3://my-bucket/some/prefix/", NULL, NULL, NULL), 0);
	ck_assert_str_eq(a.bucket, "my-bucket");
	ck_assert_str_eq(a.prefix, "some/prefix/");
	ck_assert_str_eq(a.scheme, "https");
	ck_assert_str_eq(a.host, "s3.us-east-1.amazonaws.com");
	ck_assert_str_eq(a.region, "us-east-1");
	ck_assert(a.virtual_host);
	s3_addr_free(&a);

	ck_assert_int_eq(s3_addr_parse(&a, "s3://bkt", "http://127.0.0.1:9000/", "eu-west-1", NULL),
	                 0);
	ck_assert_str_eq(a.prefix, "");
	ck_assert_str_eq(a.scheme, "http");
	ck_assert_str_eq(a.host, "127.0.0.1:9000");
	ck_assert_str_eq(a.base, "");
	ck_assert_str_eq(a.region, "eu-west-1");
	ck_assert(!a.virtual_host);
	s3_addr_free(&a);

	setenv("AWS_REGION", "ap-south-1", 1);
	ck_assert_int_eq(s3_addr_parse(&a, "S3://bkt//p", "minio.local:9000/gw", NULL, "virtual"),
	                 0);
	ck_assert_str_eq(a.scheme, "https");
	ck_assert_str_eq(a.host, "minio.local:9000");
	ck_assert_str_eq(a.base, "/gw");
	ck_assert_str_eq(a.prefix, "p/");
	ck_assert_str_eq(a.region, "ap-south-1");
	ck_assert(a.virtual_host);
	s3_addr_free(&a);

	const char *bad_urls[] = {"s3://",
	                          "s3://ab",
	                          "s3://Upper",
	                          "s3://-bucket",
	                          "s3://b..c/x",
	                          "s3://bucket/a/../b",
	                          "s3://bucket/a//b",
	                          "s3://bucket/./a",
	                          "file:///x"};
	for (size_t i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++)
		ck_assert_msg(s3_addr_parse(&a, bad_urls[i], NULL, NULL, NULL) == DP_EUSAGE,
		              "accepted %s", bad_urls[i]);
	ck_assert_int_eq(s3_addr_parse(&a, "s3://bkt", "ftp://h", NULL, NULL), DP_EUSAGE);
	ck_assert_int_eq(s3_addr_parse(&a, "s3://bkt", "http://user@h", NULL, NULL), DP_EUSAGE);
	ck_assert_int_eq(s3_addr_parse(&a, "s3://bkt", "http://h", "EU WEST", NULL), DP_EUSAGE);
	ck_assert_int_eq(s3_addr_parse(&a, "s3://bkt", "http://h", NULL, "sideways"), DP_EUSAGE);
	ck_assert_int_eq(s3_addr_parse(&a, "s3://bkt", "http://10.0.0.1:9000", NULL, "virtual"),
	                 DP_EUSAGE);
	ck_assert_ptr_nonnull(strstr(dp_error_last(), "IP address"));
	ck_assert_int_eq(s3_addr_parse(&a, "s3://bkt", "http://[::1]:9000", NULL, "virtual"),
	                 DP_EUSAGE);
	ck_assert_int_eq(s3_addr_parse(&a, "s3://b.c.d", NULL, NULL, "virtual"), DP_EUSAGE);
	ck_assert_ptr_nonnull(strstr(dp_error_last(), "--s3-uri-style path"));
}
END_TEST

/* ---- against the scripted responder ---- */

static dp_backend *open_at(dp_http_responder *r, const char *url, int retries, int timeout_ms)
{
	clear_aws_env();
	setenv("AWS_ACCESS_KEY_ID", "AKIDTEST", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "unit/test+secret", 1);
	setenv("DP_S3_BACKOFF_MS", "10", 1);
	dp_backend_opts o = {.s3_endpoint = dp_http_responder_url(r),
	                     .s3_region = "eu-central-1",
	                     .retries = retries,
	                     .timeout_ms = timeout_ms};
	dp_backend *b = NULL;
	int rc = dp_s3_backend_open(&b, url, &o);
	ck_assert_msg(rc == 0, "open: %s", dp_error_last());
	return b;
}

static void check_signed(dp_http_responder *r, size_t i)
{
	size_t blen = 0;
	const char *head = dp_http_responder_head(r, i);
	const char *body = dp_http_responder_body(r, i, &blen);
	ck_assert_ptr_nonnull(head);
	const char *why = sigv4_check(head, body, blen, "unit/test+secret");
	ck_assert_msg(why == NULL, "request %zu: %s\n%s", i, why, head);
	char v[512];
	ck_assert(get_header(head, "authorization", v, sizeof(v)));
	ck_assert_ptr_nonnull(strstr(v, "Credential=AKIDTEST/"));
	ck_assert_ptr_nonnull(strstr(v, "/eu-central-1/s3/aws4_request"));
}

START_TEST(t_put_signed_and_encoded)
{
	dp_http_step s[] = {{DP_HTTP_RESPOND, 200, NULL, NULL, 0}};
	dp_http_responder *r = dp_http_responder_start(s, 1);
	dp_backend *b = open_at(r, "s3://bkt/pre fix", 0, 5000);
	const char body[] = "hello, s3";
	ck_assert_int_eq(b->put(b, "catalog/a b+c&d=é.json", body, sizeof(body) - 1), 0);
	b->free(b);
	ck_assert_uint_eq(dp_http_responder_count(r), 1);
	const char *head = dp_http_responder_head(r, 0);
	ck_assert_msg(strncmp(head,
	                      "PUT /bkt/pre%20fix/catalog/a%20b%2Bc%26d%3D%C3%A9.json HTTP/1.1",
	                      60) == 0,
	              "%s", head);
	size_t blen;
	const char *got = dp_http_responder_body(r, 0, &blen);
	ck_assert_uint_eq(blen, sizeof(body) - 1);
	ck_assert_mem_eq(got, body, blen);
	check_signed(r, 0);
	char v[256];
	ck_assert(get_header(head, "content-type", v, sizeof(v)));
	ck_assert_str_eq(v, "application/octet-stream");
	/* The secret never travels. */
	ck_assert_ptr_null(strstr(head, "unit/test+secret"));
	dp_http_responder_stop(r);
}
END_TEST

START_TEST(t_session_token_signed)
{
	dp_http_step s[] = {{DP_HTTP_RESPOND, 200, NULL, NULL, 0}};
	dp_http_responder *r = dp_http_responder_start(s, 1);
	clear_aws_env();
	setenv("AWS_ACCESS_KEY_ID", "AKIDTEST", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "unit/test+secret", 1);
	setenv("AWS_SESSION_TOKEN", "sess+tok/en=", 1);
	dp_backend_opts o = {
	    .s3_endpoint = dp_http_responder_url(r), .s3_region = "eu-central-1", .retries = 0};
	dp_backend *b = NULL;
	ck_assert_int_eq(dp_s3_backend_open(&b, "s3://bkt/p", &o), 0);
	ck_assert_int_eq(b->put(b, "k", "x", 1), 0);
	b->free(b);
	char v[128];
	ck_assert(get_header(dp_http_responder_head(r, 0), "x-amz-security-token", v, sizeof(v)));
	ck_assert_str_eq(v, "sess+tok/en=");
	check_signed(r, 0);
	dp_http_responder_stop(r);
}
END_TEST

START_TEST(t_503_twice_then_200)
{
	const char *slow = "<Error><Code>SlowDown</Code><Message>Please reduce your request "
	                   "rate.</Message></Error>";
	dp_http_step s[] = {{DP_HTTP_RESPOND, 503, NULL, slow, 0},
	                    {DP_HTTP_RESPOND, 503, NULL, slow, 0},
	                    {DP_HTTP_RESPOND, 200, NULL, NULL, 0}};
	dp_http_responder *r = dp_http_responder_start(s, 3);
	dp_backend *b = open_at(r, "s3://bkt/p", 3, 5000);
	int rc = b->put(b, "data/00/0001", "abc", 3);
	ck_assert_msg(rc == 0, "%s", dp_error_last());
	ck_assert_uint_eq(dp_http_responder_count(r), 3);
	for (size_t i = 0; i < 3; i++)
		check_signed(r, i); /* each retry is signed afresh */
	b->free(b);
	dp_http_responder_stop(r);
}
END_TEST

START_TEST(t_503_forever_folds_attempts)
{
	dp_http_step s[] = {
	    {DP_HTTP_RESPOND, 500, NULL, "<Error><Code>InternalError</Code></Error>", 0},
	    {DP_HTTP_RESPOND, 503, NULL, "<Error><Code>SlowDown</Code></Error>", 0}};
	dp_http_responder *r = dp_http_responder_start(s, 2);
	dp_backend *b = open_at(r, "s3://bkt/p", 3, 5000);
	int rc = b->put(b, "data/00/0001", "abc", 3);
	ck_assert_int_eq(rc, DP_ETRANSIENT);
	ck_assert_uint_eq(dp_http_responder_count(r), 4);
	const char *m = dp_error_last();
	ck_assert_msg(strstr(m, "s3 write of \"s3://bkt/p/data/00/0001\" failed after 4 attempts"),
	              "%s", m);
	ck_assert_msg(strstr(m, "1: HTTP 500 InternalError"), "%s", m);
	ck_assert_msg(strstr(m, "2-4: HTTP 503 SlowDown"), "%s", m);
	ck_assert_msg(strstr(m, dp_http_responder_url(r) + 7), "%s", m);
	b->free(b);
	dp_http_responder_stop(r);
}
END_TEST

START_TEST(t_retryable_4xx)
{
	dp_http_step s[] = {
	    {DP_HTTP_RESPOND, 400, NULL,
	     "<Error><Code>RequestTimeout</Code><Message>Your socket connection to the server "
	     "was not read from or written to within the timeout period.</Message></Error>",
	     0},
	    {DP_HTTP_RESPOND, 429, "Retry-After: 1\r\n", NULL, 0},
	    {DP_HTTP_RESPOND, 200, NULL, NULL, 0},
	    {DP_HTTP_RESPOND, 400, NULL, "<Error><Code>InvalidArgument</Code></Error>", 0}};
	dp_http_responder *r = dp_http_responder_start(s, 4);
	dp_backend *b = open_at(r, "s3://bkt/p", 3, 5000);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int rc = b->put(b, "k", "abc", 3);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ck_assert_msg(rc == 0, "%s", dp_error_last());
	ck_assert_uint_eq(dp_http_responder_count(r), 3);
	/* Retry-After (1 s) is longer than the 10 ms backoff: it is honoured. */
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	ck_assert_msg(secs >= 0.95, "Retry-After was not honoured (%.2f s)", secs);
	/* Other 4xx are final. */
	ck_assert_int_eq(b->put(b, "k", "abc", 3), DP_ERROR);
	ck_assert_uint_eq(dp_http_responder_count(r), 4);
	ck_assert_msg(strstr(dp_error_last(), "HTTP 400 InvalidArgument"), "%s", dp_error_last());
	b->free(b);
	dp_http_responder_stop(r);
}
END_TEST

START_TEST(t_403_fails_at_once)
{
	dp_http_step s[] = {{DP_HTTP_RESPOND, 403, NULL,
	                     "<Error><Code>SignatureDoesNotMatch</Code><Message>The request "
	                     "signature we calculated does not match</Message></Error>",
	                     0}};
	dp_http_responder *r = dp_http_responder_start(s, 1);
	dp_backend *b = open_at(r, "s3://bkt/p", 5, 5000);
	int rc = b->put(b, "config", "abc", 3);
	ck_assert_int_eq(rc, DP_EAUTH);
	ck_assert_uint_eq(dp_http_responder_count(r), 1);
	const char *m = dp_error_last();
	ck_assert_msg(strstr(m, "HTTP 403 SignatureDoesNotMatch"), "%s", m);
	ck_assert_msg(strstr(m, "check AWS_SECRET_ACCESS_KEY"), "%s", m);
	ck_assert_msg(strstr(m, "\"s3://bkt/p/config\""), "%s", m);
	ck_assert_ptr_null(strstr(m, "unit/test+secret"));
	b->free(b);
	dp_http_responder_stop(r);

	dp_http_step s2[] = {
	    {DP_HTTP_RESPOND, 403, NULL, "<Error><Code>AccessDenied</Code></Error>", 0}};
	r = dp_http_responder_start(s2, 1);
	b = open_at(r, "s3://bkt/p", 5, 5000);
	dp_buf out = {0};
	ck_assert_int_eq(b->get(b, "config", 0, UINT64_MAX, &out), DP_EAUTH);
	ck_assert_uint_eq(dp_http_responder_count(r), 1);
	ck_assert_msg(strstr(dp_error_last(), "access denied: check the credentials"), "%s",
	              dp_error_last());
	ck_assert_uint_eq(out.len, 0);
	b->free(b);
	dp_http_responder_stop(r);
}
END_TEST

START_TEST(t_no_such_bucket_fails_at_once)
{
	dp_http_step s[] = {{DP_HTTP_RESPOND, 404, NULL,
	                     "<Error><Code>NoSuchBucket</Code><Message>The specified bucket does "
	                     "not exist</Message></Error>",
	                     0}};
	dp_http_responder *r = dp_http_responder_start(s, 1);
	dp_backend *b = open_at(r, "s3://nobkt/p", 5, 5000);
	ck_assert_int_eq(b->put(b, "config", "x", 1), DP_ERROR);
	ck_assert_uint_eq(dp_http_responder_count(r), 1);
	ck_assert_msg(strstr(dp_error_last(), "bucket \"nobkt\" does not exist"), "%s",
	              dp_error_last());
	ck_assert_msg(strstr(dp_error_last(), "aws s3 mb s3://nobkt"), "%s", dp_error_last());
	dp_buf out = {0};
	ck_assert_int_eq(b->get(b, "config", 0, UINT64_MAX, &out), DP_ENOTFOUND);
	ck_assert_uint_eq(dp_http_responder_count(r), 2);
	b->free(b);
	dp_http_responder_stop(r);
}
END_TEST

START_TEST(t_missing_object)
{
	dp_http_step s[] = {{DP_HTTP_RESPOND, 404, NULL,
	                     "<Error><Code>NoSuchKey</Code><Message>nope</Message></Error>", 0}};
	dp_http_responder *r = dp_http_responder_start(s, 1);
	dp_backend *b = open_at(r, "s3://bkt/p", 5, 5000);
	dp_buf out = {0};
	ck_assert_int_eq(b->get(b, "index/ab", 0, UINT64_MAX, &out), DP_ENOTFOUND);
	ck_assert_int_eq(b->stat(b, "index/ab", NULL), DP_ENOTFOUND);
	ck_assert_int_eq(b->remove(b, "index/ab"), 0);
	ck_assert_uint_eq(dp_http_responder_count(r), 3);
	b->free(b);
	dp_http_responder_stop(r);
}
END_TEST

START_TEST(t_dropped_body_is_retried)
{
	const char *payload = "0123456789abcdefghijklmnopqrstuvwxyz";
	dp_http_step s[] = {{DP_HTTP_DROP_BODY, 200, NULL, payload, 0},
	                    {DP_HTTP_RESET, 0, NULL, NULL, 0},
	                    {DP_HTTP_RESPOND, 200, NULL, payload, 0}};
	dp_http_responder *r = dp_http_responder_start(s, 3);
	dp_backend *b = open_at(r, "s3://bkt/p", 3, 5000);
	dp_buf out = {0};
	ck_assert_int_eq(dp_buf_append(&out, "keep:", 5), 0);
	int rc = b->get(b, "data/00/0001", 0, UINT64_MAX, &out);
	ck_assert_msg(rc == 0, "%s", dp_error_last());
	ck_assert_uint_eq(dp_http_responder_count(r), 3);
	/* The half body of the first attempt is gone; what was there stays. */
	ck_assert_uint_eq(out.len, 5 + strlen(payload));
	ck_assert_mem_eq(out.data, "keep:", 5);
	ck_assert_mem_eq(out.data + 5, payload, strlen(payload));
	dp_buf_free(&out);
	b->free(b);
	dp_http_responder_stop(r);
}
END_TEST

START_TEST(t_stall_is_retried_then_fails)
{
	dp_http_step s[] = {{DP_HTTP_STALL, 200, NULL, "late", 4000}};
	dp_http_responder *r = dp_http_responder_start(s, 1);
	dp_backend *b = open_at(r, "s3://bkt/p", 1, 500);
	dp_buf out = {0};
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int rc = b->get(b, "snapshots/x", 0, UINT64_MAX, &out);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	ck_assert_int_eq(rc, DP_ETRANSIENT);
	ck_assert_uint_eq(dp_http_responder_count(r), 2);
	const char *m = dp_error_last();
	ck_assert_msg(strstr(m, "failed after 2 attempts"), "%s", m);
	ck_assert_msg(strstr(m, "1-2: timed out (no progress for 500 ms)"), "%s", m);
	/* Each attempt gave up before the 4 s the server takes (a timeout that
	 * did not work would have got the late answer instead). */
	ck_assert_msg(secs < 7.5, "took %.2f s", secs);
	ck_assert_uint_eq(out.len, 0);
	b->free(b);
	dp_http_responder_stop(r);
}
END_TEST

START_TEST(t_stall_then_ok)
{
	dp_http_step s[] = {{DP_HTTP_STALL, 200, NULL, "late", 3000},
	                    {DP_HTTP_RESPOND, 200, NULL, "fresh", 0}};
	dp_http_responder *r = dp_http_responder_start(s, 2);
	dp_backend *b = open_at(r, "s3://bkt/p", 2, 500);
	dp_buf out = {0};
	int rc = b->get(b, "k", 0, UINT64_MAX, &out);
	ck_assert_msg(rc == 0, "%s", dp_error_last());
	ck_assert_uint_eq(out.len, 5);
	ck_assert_mem_eq(out.data, "fresh", 5);
	dp_buf_free(&out);
	b->free(b);
	dp_http_responder_stop(r);
}
END_TEST

START_TEST(t_connection_refused)
{
	/* A port nobody listens on: take one from a responder, then stop it. */
	dp_http_step s[] = {{DP_HTTP_RESPOND, 200, NULL, NULL, 0}};
	dp_http_responder *r = dp_http_responder_start(s, 1);
	char url[64];
	snprintf(url, sizeof(url), "%s", dp_http_responder_url(r));
	dp_backend *b = open_at(r, "s3://bkt/p", 2, 2000);
	dp_http_responder_stop(r);
	int rc = b->put(b, "k", "x", 1);
	ck_assert_int_eq(rc, DP_ETRANSIENT);
	ck_assert_msg(strstr(dp_error_last(), "1-3: connection refused"), "%s", dp_error_last());
	ck_assert_msg(strstr(dp_error_last(), url), "%s", dp_error_last());
	b->free(b);
}
END_TEST

START_TEST(t_ranged_get)
{
	dp_http_step s[] = {{DP_HTTP_RESPOND, 206, NULL, "cdef", 0},
	                    {DP_HTTP_RESPOND, 200, NULL, "abcdefgh", 0}, /* Range ignored */
	                    {DP_HTTP_RESPOND, 206, NULL, "cd", 0}}; /* short */
	dp_http_responder *r = dp_http_responder_start(s, 3);
	dp_backend *b = open_at(r, "s3://bkt/p", 0, 5000);
	ck_assert(b->features & DP_BACKEND_F_RANGE);
	ck_assert(b->features & DP_BACKEND_F_PARALLEL);
	dp_buf out = {0};
	ck_assert_int_eq(b->get(b, "data/aa/pack", 2, 4, &out), 0);
	ck_assert_uint_eq(out.len, 4);
	ck_assert_mem_eq(out.data, "cdef", 4);
	char v[64];
	ck_assert(get_header(dp_http_responder_head(r, 0), "range", v, sizeof(v)));
	ck_assert_str_eq(v, "bytes=2-5");
	check_signed(r, 0);
	dp_buf_reset(&out);
	ck_assert_int_eq(b->get(b, "data/aa/pack", 2, 4, &out), 0);
	ck_assert_uint_eq(out.len, 4);
	ck_assert_mem_eq(out.data, "cdef", 4);
	dp_buf_reset(&out);
	ck_assert_int_eq(b->get(b, "data/aa/pack", 2, 4, &out), DP_ECORRUPT);
	ck_assert_msg(strstr(dp_error_last(), "truncated"), "%s", dp_error_last());
	ck_assert_uint_eq(out.len, 0);
	dp_buf_free(&out);
	b->free(b);
	dp_http_responder_stop(r);
}
END_TEST

static int collect(const char *key, uint64_t size, void *arg)
{
	xml_log *l = arg;
	size_t n = strlen(l->text);
	snprintf(l->text + n, sizeof(l->text) - n, "%s:%llu|", key, (unsigned long long)size);
	return 0;
}

START_TEST(t_list_pages)
{
	const char *p1 = "<?xml version=\"1.0\"?><ListBucketResult><Name>bkt</Name>"
	                 "<Contents><Key>repo/index/aa</Key><Size>10</Size></Contents>"
	                 "<Contents><Key>repo/index/b&amp;b</Key><Size>20</Size></Contents>"
	                 "<IsTruncated>true</IsTruncated>"
	                 "<NextContinuationToken>1/tok+en=</NextContinuationToken>"
	                 "</ListBucketResult>";
	const char *p2 = "<ListBucketResult><Contents><Key>repo/index/cc</Key><Size>"
	                 "30000000000</Size></Contents><IsTruncated>false</IsTruncated>"
	                 "</ListBucketResult>";
	dp_http_step s[] = {{DP_HTTP_RESPOND, 200, NULL, p1, 0},
	                    {DP_HTTP_RESPOND, 200, NULL, p2, 0}};
	dp_http_responder *r = dp_http_responder_start(s, 2);
	dp_backend *b = open_at(r, "s3://bkt/repo", 0, 5000);
	xml_log seen = {0};
	ck_assert_int_eq(b->list(b, "index/", collect, &seen), 0);
	ck_assert_str_eq(seen.text, "index/aa:10|index/b&b:20|index/cc:30000000000|");
	ck_assert_uint_eq(dp_http_responder_count(r), 2);
	const char *h0 = dp_http_responder_head(r, 0), *h1 = dp_http_responder_head(r, 1);
	ck_assert_msg(strncmp(h0, "GET /bkt?list-type=2&prefix=repo%2Findex%2F HTTP", 48) == 0,
	              "%s", h0);
	ck_assert_msg(strncmp(h1,
	                      "GET /bkt?continuation-token=1%2Ftok%2Ben%3D&list-type=2&prefix=repo%"
	                      "2Findex%2F HTTP",
	                      80) == 0,
	              "%s", h1);
	check_signed(r, 0);
	check_signed(r, 1);
	b->free(b);
	dp_http_responder_stop(r);
}
END_TEST

START_TEST(t_list_bad_pages)
{
	/* Truncated without a token would loop forever: refused. */
	const char *p1 = "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>";
	/* A key outside the prefix. */
	const char *p2 = "<ListBucketResult><Contents><Key>other/x</Key><Size>1</Size></Contents>"
	                 "<IsTruncated>false</IsTruncated></ListBucketResult>";
	dp_http_step s[] = {{DP_HTTP_RESPOND, 200, NULL, p1, 0},
	                    {DP_HTTP_RESPOND, 200, NULL, p2, 0},
	                    {DP_HTTP_RESPOND, 200, NULL, "<ListBucketResult><Contents>", 0}};
	dp_http_responder *r = dp_http_responder_start(s, 3);
	dp_backend *b = open_at(r, "s3://bkt/repo", 0, 5000);
	xml_log seen = {0};
	ck_assert_int_eq(b->list(b, "", collect, &seen), DP_ECORRUPT);
	ck_assert_msg(strstr(dp_error_last(), "continuation token"), "%s", dp_error_last());
	ck_assert_int_eq(b->list(b, "", collect, &seen), DP_ECORRUPT);
	ck_assert_msg(strstr(dp_error_last(), "outside the prefix"), "%s", dp_error_last());
	ck_assert_int_eq(b->list(b, "", collect, &seen), DP_ECORRUPT);
	ck_assert_msg(strstr(dp_error_last(), "malformed xml"), "%s", dp_error_last());
	ck_assert_str_eq(seen.text, "");
	b->free(b);
	dp_http_responder_stop(r);
}
END_TEST

START_TEST(t_remove_many_batches)
{
	dp_http_step s[] = {{DP_HTTP_RESPOND, 200, NULL, "<DeleteResult></DeleteResult>", 0},
	                    {DP_HTTP_RESPOND, 200, NULL,
	                     "<DeleteResult><Error><Key>p/k&amp;1</Key><Code>AccessDenied</Code>"
	                     "<Message>no</Message></Error></DeleteResult>",
	                     0}};
	dp_http_responder *r = dp_http_responder_start(s, 2);
	dp_backend *b = open_at(r, "s3://bkt/p", 0, 5000);
	enum { N = 1500 };
	static char names[N][32];
	const char *keys[N];
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof(names[i]), "data/%02x/k&%d", i % 256, i);
		keys[i] = names[i];
	}
	int rc = b->remove_many(b, keys, N);
	ck_assert_int_eq(rc, DP_ERROR); /* the second batch reports an error */
	ck_assert_msg(strstr(dp_error_last(), "1 of 500 objects not deleted"), "%s",
	              dp_error_last());
	ck_assert_msg(strstr(dp_error_last(), "p/k&1"), "%s", dp_error_last());
	ck_assert_uint_eq(dp_http_responder_count(r), 2);
	for (size_t i = 0; i < 2; i++) {
		const char *head = dp_http_responder_head(r, i);
		ck_assert_msg(strncmp(head, "POST /bkt?delete= HTTP/1.1", 26) == 0, "%s", head);
		check_signed(r, i);
		size_t blen;
		const char *body = dp_http_responder_body(r, i, &blen);
		unsigned char md5[16];
		unsigned int ml = 0;
		EVP_Digest(body, blen, md5, &ml, EVP_md5(), NULL);
		dp_buf want = {0};
		ck_assert_int_eq(dp_base64_encode(&want, md5, ml), 0);
		char v[64];
		ck_assert(get_header(head, "content-md5", v, sizeof(v)));
		ck_assert_str_eq(v, (char *)want.data);
		dp_buf_free(&want);
		/* Count the keys, escaped, with the prefix. */
		size_t n = 0;
		for (const char *p = body; (p = strstr(p, "<Key>p/data/")); p++)
			n++;
		ck_assert_uint_eq(n, i == 0 ? 1000 : 500);
		ck_assert_ptr_nonnull(strstr(body, i == 0 ? "<Key>p/data/00/k&amp;0</Key>"
		                                          : "<Key>p/data/e8/k&amp;1000</Key>"));
		ck_assert_ptr_nonnull(strstr(body, "<Quiet>true</Quiet>"));
	}
	b->free(b);
	dp_http_responder_stop(r);
}
END_TEST

START_TEST(t_create_reports_step)
{
	/* Step 1: the write is refused. */
	dp_http_step s1[] = {
	    {DP_HTTP_RESPOND, 403, NULL, "<Error><Code>AccessDenied</Code></Error>", 0}};
	dp_http_responder *r = dp_http_responder_start(s1, 1);
	dp_backend *b = open_at(r, "s3://bkt/p", 2, 5000);
	ck_assert_int_eq(b->create(b), DP_EAUTH);
	ck_assert_msg(strstr(dp_error_last(), "step 1 of 3 (write a probe object"), "%s",
	              dp_error_last());
	b->free(b);
	dp_http_responder_stop(r);

	/* Step 2: the read returns other bytes (then the probe is deleted). */
	dp_http_step s2[] = {{DP_HTTP_RESPOND, 200, NULL, NULL, 0},
	                     {DP_HTTP_RESPOND, 200, NULL, "not what was written", 0},
	                     {DP_HTTP_RESPOND, 204, NULL, NULL, 0}};
	r = dp_http_responder_start(s2, 3);
	b = open_at(r, "s3://bkt/p", 2, 5000);
	ck_assert_int_eq(b->create(b), DP_ECORRUPT);
	ck_assert_msg(strstr(dp_error_last(), "step 2 of 3 (read back"), "%s", dp_error_last());
	ck_assert_uint_eq(dp_http_responder_count(r), 3);
	ck_assert_msg(strncmp(dp_http_responder_head(r, 2), "DELETE /bkt/p/.dp-probe-", 24) == 0,
	              "%s", dp_http_responder_head(r, 2));
	b->free(b);
	dp_http_responder_stop(r);
}
END_TEST

START_TEST(t_virtual_host_url)
{
	dp_http_step s[] = {{DP_HTTP_RESPOND, 200, NULL, NULL, 0}};
	dp_http_responder *r = dp_http_responder_start(s, 1);
	clear_aws_env();
	setenv("AWS_ACCESS_KEY_ID", "AKIDTEST", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "unit/test+secret", 1);
	/* *.localhost resolves to loopback inside libcurl. */
	char ep[96];
	snprintf(ep, sizeof(ep), "http://localhost:%d", dp_http_responder_port(r));
	dp_backend_opts o = {.s3_endpoint = ep,
	                     .s3_region = "eu-central-1",
	                     .s3_uri_style = "virtual",
	                     .retries = 0};
	dp_backend *b = NULL;
	ck_assert_int_eq(dp_s3_backend_open(&b, "s3://vbucket/p", &o), 0);
	int rc = b->put(b, "config", "x", 1);
	ck_assert_msg(rc == 0, "%s", dp_error_last());
	const char *head = dp_http_responder_head(r, 0);
	ck_assert_msg(strncmp(head, "PUT /p/config HTTP/1.1", 22) == 0, "%s", head);
	char v[128];
	ck_assert(get_header(head, "host", v, sizeof(v)));
	char want[128];
	snprintf(want, sizeof(want), "vbucket.localhost:%d", dp_http_responder_port(r));
	ck_assert_str_eq(v, want);
	check_signed(r, 0);
	b->free(b);
	dp_http_responder_stop(r);
}
END_TEST

struct put_arg {
	dp_backend *b;
	int id;
	int fails;
};

static void *put_worker(void *p)
{
	struct put_arg *a = p;
	char key[64], body[100];
	for (int i = 0; i < 25; i++) {
		snprintf(key, sizeof(key), "data/%02d/%04d", a->id, i);
		memset(body, 'a' + a->id, sizeof(body));
		if (a->b->put(a->b, key, body, sizeof(body)) != 0)
			a->fails++;
	}
	return NULL;
}

START_TEST(t_parallel_puts_reuse_connections)
{
	dp_http_step s[] = {{DP_HTTP_RESPOND, 200, NULL, NULL, 0}};
	dp_http_responder *r = dp_http_responder_start(s, 1);
	dp_backend *b = open_at(r, "s3://bkt/p", 0, 5000);
	enum { T = 4, PER = 25 };
	pthread_t th[T];
	struct put_arg args[T];
	for (int i = 0; i < T; i++) {
		args[i] = (struct put_arg){b, i, 0};
		ck_assert_int_eq(pthread_create(&th[i], NULL, put_worker, &args[i]), 0);
	}
	for (int i = 0; i < T; i++) {
		pthread_join(th[i], NULL);
		ck_assert_int_eq(args[i].fails, 0);
	}
	ck_assert_uint_eq(dp_http_responder_count(r), T * PER);
	/* Pooled handles keep their connections: about one per thread. */
	ck_assert_msg(dp_http_responder_connections(r) <= 2 * T, "%zu connections for %d requests",
	              dp_http_responder_connections(r), T * PER);
	/* Sequential requests from one thread reuse one connection. */
	size_t before = dp_http_responder_connections(r);
	for (int i = 0; i < 20; i++)
		ck_assert_int_eq(b->put(b, "seq", "x", 1), 0);
	ck_assert_uint_le(dp_http_responder_connections(r), before + 1);
	b->free(b);
	dp_http_responder_stop(r);
}
END_TEST

static Suite *s3_suite(void)
{
	Suite *s = suite_create("s3");
	TCase *tc = tcase_create("helpers");
	tcase_add_checked_fixture(tc, dp_test_setup, dp_test_teardown);
	tcase_add_test(tc, t_sigv4_verifier_aws_example);
	tcase_add_test(tc, t_uri_encode);
	tcase_add_test(tc, t_query_build);
	tcase_add_test(tc, t_xml_parse);
	tcase_add_test(tc, t_xml_rejects);
	tcase_add_test(tc, t_cred_env_and_file);
	tcase_add_test(tc, t_addr_parse);
	suite_add_tcase(s, tc);

	tc = tcase_create("responder");
	tcase_add_checked_fixture(tc, dp_test_setup, dp_test_teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, t_put_signed_and_encoded);
	tcase_add_test(tc, t_session_token_signed);
	tcase_add_test(tc, t_503_twice_then_200);
	tcase_add_test(tc, t_503_forever_folds_attempts);
	tcase_add_test(tc, t_retryable_4xx);
	tcase_add_test(tc, t_403_fails_at_once);
	tcase_add_test(tc, t_no_such_bucket_fails_at_once);
	tcase_add_test(tc, t_missing_object);
	tcase_add_test(tc, t_dropped_body_is_retried);
	tcase_add_test(tc, t_stall_is_retried_then_fails);
	tcase_add_test(tc, t_stall_then_ok);
	tcase_add_test(tc, t_connection_refused);
	tcase_add_test(tc, t_ranged_get);
	tcase_add_test(tc, t_list_pages);
	tcase_add_test(tc, t_list_bad_pages);
	tcase_add_test(tc, t_remove_many_batches);
	tcase_add_test(tc, t_create_reports_step);
	tcase_add_test(tc, t_virtual_host_url);
	tcase_add_test(tc, t_parallel_puts_reuse_connections);
	suite_add_tcase(s, tc);
	return s;
}

DP_TEST_MAIN(s3_suite)

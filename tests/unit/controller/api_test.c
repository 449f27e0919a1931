/*
 * The REST API (dp-controller/api*.c) served in-process on 127.0.0.1 (a
 * free port) over a catalog in the test's temp dir, with libcurl as the
 * client: auth (401 without or with a wrong token, 200 with it), the token
 * file, bad bodies (400 with the validator's message, the whole corpus in
 * tests/data/bad-manifests, nothing stored), 413, PUT/GET round trips,
 * DELETE rules, 404/405, events, watches (a change after the watch started,
 * resuming, filters, heartbeats), dry runs, and stopping with a watch open.
 */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "../../harness/dp_test.h"
#include "dp/api.h"
#include "dp/catalog.h"
#include "dp/error.h"
#include "dp/log.h"

static char data_dir[PATH_MAX];
static char home[PATH_MAX + 16], catalog_path[PATH_MAX + 32];
static char token[128];
static dp_api *api;
static int port;

static const char repo_yaml[] = "apiVersion: dataprotection.dp.io/v1alpha1\n"
                                "kind: BackupRepo\n"
                                "metadata: {name: nas}\n"
                                "spec:\n"
                                "  posix: {path: /srv/backups}\n"
                                "  encryption: {passphraseFrom: {env: DP_PASSPHRASE}}\n";

static void start_api(size_t max_body)
{
	dp_api_opts o = {.listen = "127.0.0.1:0",
	                 .home = home,
	                 .heartbeat_ms = 300,
	                 .poll_ms = 50,
	                 .max_body = max_body};
	ck_assert_msg(dp_api_start(&api, catalog_path, &o) == 0, "%s", dp_error_last());
	port = dp_api_port(api);
	ck_assert_int_gt(port, 0);
	ck_assert_int_eq(dp_api_token(token, sizeof(token), home), 0);
}

static void setup(void)
{
	dp_test_setup();
	dp_log_set_level(DP_LOG_WARN); /* one line per request otherwise */
	snprintf(home, sizeof(home), "%s/home", dp_test_dir);
	snprintf(catalog_path, sizeof(catalog_path), "%s/catalog.db", home);
	ck_assert_int_eq(mkdir(home, 0700), 0);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	start_api(0);
}

static void teardown(void)
{
	dp_api_stop(api);
	api = NULL;
	curl_global_cleanup();
	dp_test_teardown();
}

/* ---- a small client ---- */

typedef struct resp {
	long status;
	dp_buf body; /* NUL-terminated */
	char allow[128], www_auth[128], ctype[128];
} resp;

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	dp_buf *b = arg;
	return dp_buf_append(b, p, size * n) == 0 ? size * n : 0;
}

static void copy_header(char *dst, size_t dstlen, const char *line, size_t len, const char *name)
{
	size_t nl = strlen(name);
	if (len > nl && strncasecmp(line, name, nl) == 0) {
		const char *v = line + nl;
		size_t vl = len - nl;
		while (vl && (*v == ' '))
			v++, vl--;
		while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
			vl--;
		snprintf(dst, dstlen, "%.*s", (int)vl, v);
	}
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	resp *r = arg;
	copy_header(r->allow, sizeof(r->allow), p, size * n, "Allow:");
	copy_header(r->www_auth, sizeof(r->www_auth), p, size * n, "WWW-Authenticate:");
	copy_header(r->ctype, sizeof(r->ctype), p, size * n, "Content-Type:");
	return size * n;
}

/* tok: NULL sends no Authorization header. extra: one more header or NULL. */
static void http_ex(resp *r, const char *method, const char *path, const char *tok,
                    const void *body, size_t len, const char *extra)
{
	char url[1024], auth[256];
	memset(r, 0, sizeof(*r));
	CURL *h = curl_easy_init();
	ck_assert_ptr_nonnull(h);
	struct curl_slist *hdrs = NULL;
	if (tok) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", tok);
		hdrs = curl_slist_append(hdrs, auth);
	}
	if (extra)
		hdrs = curl_slist_append(hdrs, extra);
	hdrs = curl_slist_append(hdrs, "Expect:");
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	if (strcmp(method, "HEAD") == 0)
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	if (body) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	}
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &r->body);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
	CURLcode cc = curl_easy_perform(h);
	ck_assert_msg(cc == CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(cc));
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	dp_buf_append(&r->body, "", 1);
	r->body.len--;
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
}

static void http(resp *r, const char *method, const char *path, const char *body)
{
	http_ex(r, method, path, token, body, body ? strlen(body) : 0, NULL);
}

static const char *text(resp *r)
{
	return r->body.data ? (const char *)r->body.data : "";
}

/* The "error" of a JSON error body, checking its shape {"error", "code"}. */
static char *error_of(resp *r)
{
	static char msg[2048];
	cJSON *o = cJSON_Parse(text(r));
	ck_assert_msg(o, "not JSON: %s", text(r));
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
	const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "code");
	ck_assert_msg(cJSON_IsString(e) && cJSON_IsNumber(c), "bad error shape: %s", text(r));
	ck_assert_int_eq((long)c->valuedouble, r->status);
	ck_assert_int_eq(cJSON_GetArraySize(o), 2);
	snprintf(msg, sizeof(msg), "%s", e->valuestring);
	cJSON_Delete(o);
	return msg;
}

static void resp_free(resp *r)
{
	dp_buf_free(&r->body);
}

static cJSON *json_of(resp *r)
{
	cJSON *o = cJSON_Parse(text(r));
	ck_assert_msg(o, "not JSON: %s", text(r));
	return o;
}

static const char *jstr(const cJSON *o, const char *path)
{
	/* "a.b.c" */
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", path);
	const cJSON *v = o;
	char *save = NULL;
	for (char *k = strtok_r(buf, ".", &save); k && v; k = strtok_r(NULL, ".", &save))
		v = cJSON_GetObjectItemCaseSensitive(v, k);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static size_t count_resources(void)
{
	dp_catalog *c;
	size_t total = 0;
	ck_assert_int_eq(dp_catalog_open(&c, catalog_path), 0);
	for (int k = 0; k < DP_KIND_COUNT; k++) {
		dp_resource *v;
		size_t n;
		ck_assert_int_eq(dp_catalog_list(c, (dp_kind)k, &v, &n), 0);
		total += n;
		dp_resources_free(v, n);
	}
	dp_catalog_close(c);
	return total;
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	ck_assert_msg(f, "cannot open %s", path);
	dp_buf b = {0};
	char tmp[8192];
	size_t n;
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		ck_assert_int_eq(dp_buf_append(&b, tmp, n), 0);
	fclose(f);
	dp_buf_append(&b, "", 1);
	if (len)
		*len = b.len - 1;
	return (char *)b.data;
}

/* ---- tests ---- */

START_TEST(test_healthz)
{
	resp r;
	http_ex(&r, "GET", "/healthz", NULL, NULL, 0, NULL);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(text(&r), "{\"status\":\"ok\"}\n");
	ck_assert_str_eq(r.ctype, "application/json");
	resp_free(&r);
	http_ex(&r, "POST", "/healthz", NULL, "x", 1, NULL);
	ck_assert_int_eq(r.status, 405);
	ck_assert_str_eq(r.allow, "GET, HEAD");
	resp_free(&r);
}
END_TEST

START_TEST(test_auth)
{
	resp r;
	/* The token file: 0600, 64 hex digits, the same on every read. */
	char path[PATH_MAX + 64], again[128];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s", home, DP_API_TOKEN_FILE);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	ck_assert_uint_eq(strlen(token), 64);
	ck_assert_uint_eq(strspn(token, "0123456789abcdef"), 64);
	ck_assert_int_eq(dp_api_token(again, sizeof(again), home), 0);
	ck_assert_str_eq(again, token);

	const char *paths[] = {"/api/v1alpha1/backuprepos", "/api/v1alpha1/backuprepos/nas",
	                       "/api/v1alpha1", "/api/v1alpha1/nosuchkind", "/api/v2"};
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		http_ex(&r, "GET", paths[i], NULL, NULL, 0, NULL);
		ck_assert_int_eq(r.status, 401);
		ck_assert_str_eq(r.www_auth, "Bearer realm=\"dp\"");
		ck_assert_ptr_nonnull(strstr(error_of(&r), "no API token"));
		resp_free(&r);
	}
	/* Wrong tokens: another one, a prefix, the token plus a byte, another scheme. */
	char longer[200], prefix[64];
	snprintf(longer, sizeof(longer), "%sx", token);
	snprintf(prefix, sizeof(prefix), "%.63s", token);
	const char *wrong[] = {"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
	                       prefix, longer, ""};
	for (size_t i = 0; i < 4; i++) {
		http_ex(&r, "GET", "/api/v1alpha1/backuprepos", wrong[i], NULL, 0, NULL);
		ck_assert_int_eq(r.status, 401);
		ck_assert_str_eq(error_of(&r), "wrong API token");
		resp_free(&r);
	}
	char basic[200];
	snprintf(basic, sizeof(basic), "Authorization: Basic %s", token);
	http_ex(&r, "GET", "/api/v1alpha1/backuprepos", NULL, NULL, 0, basic);
	ck_assert_int_eq(r.status, 401);
	resp_free(&r);
	/* ?access_token= (for EventSource, which cannot send headers): GET only. */
	char q[256];
	snprintf(q, sizeof(q), "/api/v1alpha1/backuprepos?access_token=%s", token);
	http_ex(&r, "GET", q, NULL, NULL, 0, NULL);
	ck_assert_int_eq(r.status, 200);
	resp_free(&r);
	http_ex(&r, "GET", "/api/v1alpha1/backuprepos?access_token=nope", NULL, NULL, 0, NULL);
	ck_assert_int_eq(r.status, 401);
	ck_assert_str_eq(error_of(&r), "wrong API token");
	resp_free(&r);
	snprintf(q, sizeof(q), "/api/v1alpha1/backuprepos/nas?access_token=%s", token);
	http_ex(&r, "PUT", q, NULL, repo_yaml, strlen(repo_yaml), NULL);
	ck_assert_int_eq(r.status, 401);
	resp_free(&r);
	/* A PUT without a token stores nothing, whatever its body. */
	http_ex(&r, "PUT", "/api/v1alpha1/backuprepos/nas", NULL, repo_yaml, strlen(repo_yaml),
	        NULL);
	ck_assert_int_eq(r.status, 401);
	resp_free(&r);
	ck_assert_uint_eq(count_resources(), 0);

	http(&r, "GET", "/api/v1alpha1/backuprepos", NULL);
	ck_assert_int_eq(r.status, 200);
	resp_free(&r);
	/* The scheme is case-insensitive. */
	char lower[200];
	snprintf(lower, sizeof(lower), "Authorization: bearer %s", token);
	http_ex(&r, "GET", "/api/v1alpha1/backuprepos", NULL, NULL, 0, lower);
	ck_assert_int_eq(r.status, 200);
	resp_free(&r);
}
END_TEST

START_TEST(test_token_file_checks)
{
	char h2[PATH_MAX + 32], path[PATH_MAX + 64], t[128];
	snprintf(h2, sizeof(h2), "%s/h2", dp_test_dir);
	ck_assert_int_eq(mkdir(h2, 0700), 0);
	snprintf(path, sizeof(path), "%s/%s", h2, DP_API_TOKEN_FILE);
	/* A token file readable by others is refused, and so the server. */
	FILE *f = fopen(path, "w");
	fputs("0123456789abcdef0123456789abcdef\n", f);
	fclose(f);
	chmod(path, 0644);
	ck_assert_int_eq(dp_api_token(t, sizeof(t), h2), DP_EAUTH);
	ck_assert_ptr_nonnull(strstr(dp_error_last(), "chmod 600"));
	dp_api *a2 = NULL;
	dp_api_opts o = {.listen = "127.0.0.1:0", .home = h2};
	ck_assert_int_eq(dp_api_start(&a2, catalog_path, &o), DP_EAUTH);
	ck_assert_ptr_null(a2);
	/* A token the user wrote (0600) is used as is. */
	chmod(path, 0600);
	ck_assert_int_eq(dp_api_token(t, sizeof(t), h2), 0);
	ck_assert_str_eq(t, "0123456789abcdef0123456789abcdef");
	/* An empty one is refused. */
	f = fopen(path, "w");
	fclose(f);
	ck_assert_int_eq(dp_api_token(t, sizeof(t), h2), DP_EAUTH);
}
END_TEST

START_TEST(test_put_get_round_trip)
{
	resp r;
	http(&r, "PUT", "/api/v1alpha1/backuprepos/nas", repo_yaml);
	ck_assert_msg(r.status == 201, "%ld %s", r.status, text(&r));
	cJSON *o = json_of(&r);
	ck_assert_str_eq(jstr(o, "kind"), "BackupRepo");
	ck_assert_str_eq(jstr(o, "metadata.name"), "nas");
	ck_assert_str_eq(jstr(o, "spec.posix.path"), "/srv/backups");
	cJSON_Delete(o);
	resp_free(&r);

	/* Every spelling of the kind reaches the same object. */
	const char *forms[] = {"backuprepos", "backuprepo", "repos", "br", "BackupRepos"};
	char path[128], first[4096] = "";
	for (int i = 0; i < 5; i++) {
		snprintf(path, sizeof(path), "/api/v1alpha1/%s/nas", forms[i]);
		http(&r, "GET", path, NULL);
		ck_assert_int_eq(r.status, 200);
		if (!first[0])
			snprintf(first, sizeof(first), "%s", text(&r));
		else
			ck_assert_str_eq(text(&r), first);
		resp_free(&r);
	}
	/* What GET returns is accepted back by PUT, unchanged: 200. */
	http(&r, "PUT", "/api/v1alpha1/backuprepos/nas", first);
	ck_assert_msg(r.status == 200, "%ld %s", r.status, text(&r));
	ck_assert_str_eq(text(&r), first);
	resp_free(&r);

	/* An update (JSON body) bumps the generation. */
	const char *upd =
	    "{\"apiVersion\": \"dataprotection.dp.io/v1alpha1\", \"kind\": "
	    "\"BackupRepo\", \"metadata\": {\"name\": \"nas\", \"labels\": {\"tier\": "
	    "\"gold\"}}, \"spec\": {\"posix\": {\"path\": \"/srv/backups\"}, "
	    "\"compression\": {\"level\": 9}, \"encryption\": {\"passphraseFrom\": "
	    "{\"env\": \"DP_PASSPHRASE\"}}}}";
	http(&r, "PUT", "/api/v1alpha1/backuprepos/nas", upd);
	ck_assert_msg(r.status == 200, "%ld %s", r.status, text(&r));
	o = json_of(&r);
	ck_assert_int_eq(
	    cJSON_GetObjectItem(cJSON_GetObjectItem(o, "metadata"), "generation")->valuedouble, 2);
	ck_assert_str_eq(jstr(o, "metadata.labels.tier"), "gold");
	cJSON_Delete(o);
	resp_free(&r);

	/* The list: a List with metadata.resourceVersion and the item. YAML on request. */
	http(&r, "GET", "/api/v1alpha1/backuprepos", NULL);
	ck_assert_int_eq(r.status, 200);
	o = json_of(&r);
	ck_assert_str_eq(jstr(o, "kind"), "List");
	ck_assert_str_eq(jstr(o, "metadata.resourceVersion"), "2");
	cJSON *items = cJSON_GetObjectItem(o, "items");
	ck_assert_int_eq(cJSON_GetArraySize(items), 1);
	ck_assert_str_eq(jstr(cJSON_GetArrayItem(items, 0), "metadata.name"), "nas");
	cJSON_Delete(o);
	resp_free(&r);
	http(&r, "GET", "/api/v1alpha1/backuprepos/nas?output=yaml", NULL);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.ctype, "application/yaml");
	ck_assert_ptr_nonnull(strstr(text(&r), "kind: BackupRepo\n"));
	resp_free(&r);
	http(&r, "GET", "/api/v1alpha1/actionsets", NULL);
	ck_assert_int_eq(r.status, 200);
	o = json_of(&r);
	ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(o, "items")), 0);
	cJSON_Delete(o);
	resp_free(&r);

	/* Audited as "api". */
	dp_catalog *c;
	dp_audit_entry *au;
	size_t n;
	ck_assert_int_eq(dp_catalog_open(&c, catalog_path), 0);
	ck_assert_int_eq(dp_catalog_audit(c, 0, 0, &au, &n), 0);
	ck_assert_uint_eq(n, 2);
	for (size_t i = 0; i < n; i++)
		ck_assert_str_eq(au[i].actor, DP_API_ACTOR);
	ck_assert_str_eq(au[0].action, "create");
	ck_assert_str_eq(au[1].action, "update");
	dp_audit_free(au, n);
	dp_catalog_close(c);

	/* Its events, as dp describe shows them. */
	http(&r, "GET", "/api/v1alpha1/backuprepos/nas/events", NULL);
	ck_assert_int_eq(r.status, 200);
	o = json_of(&r);
	items = cJSON_GetObjectItem(o, "items");
	ck_assert_int_eq(cJSON_GetArraySize(items), 2);
	ck_assert_str_eq(jstr(cJSON_GetArrayItem(items, 0), "reason"), "Created");
	ck_assert_str_eq(jstr(cJSON_GetArrayItem(items, 0), "message"), "created by api");
	ck_assert_str_eq(jstr(cJSON_GetArrayItem(items, 1), "reason"), "Updated");
	cJSON_Delete(o);
	resp_free(&r);
	http(&r, "GET", "/api/v1alpha1/backuprepos/other/events", NULL);
	ck_assert_int_eq(r.status, 404);
	ck_assert_str_eq(error_of(&r), "backuprepo \"other\" not found");
	resp_free(&r);
}
END_TEST

START_TEST(test_apply_manifest)
{
	resp r;
	size_t len;
	char path[PATH_MAX + 64];
	snprintf(path, sizeof(path), "%s/good-manifests/postgres-full.yaml", data_dir);
	char *body = slurp(path, &len);
	http(&r, "POST", "/api/v1alpha1?dryRun=1", body);
	ck_assert_msg(r.status == 200, "%ld %s", r.status, text(&r));
	ck_assert_ptr_nonnull(strstr(text(&r), "\"dryRun\":true"));
	resp_free(&r);
	ck_assert_uint_eq(count_resources(), 0);
	http(&r, "POST", "/api/v1alpha1", body);
	ck_assert_msg(r.status == 200, "%ld %s", r.status, text(&r));
	cJSON *o = json_of(&r);
	cJSON *items = cJSON_GetObjectItem(o, "items");
	ck_assert_int_eq(cJSON_GetArraySize(items), 6);
	ck_assert_str_eq(jstr(cJSON_GetArrayItem(items, 0), "kind"), "BackupRepo");
	ck_assert_str_eq(jstr(cJSON_GetArrayItem(items, 0), "action"), "created");
	ck_assert_str_eq(jstr(cJSON_GetArrayItem(items, 5), "kind"), "Restore");
	cJSON_Delete(o);
	resp_free(&r);
	http(&r, "POST", "/api/v1alpha1", body);
	ck_assert_int_eq(r.status, 200);
	ck_assert_ptr_null(strstr(text(&r), "\"created\""));
	resp_free(&r);
	free(body);
	ck_assert_uint_eq(count_resources(), 6);

	/* Label selectors on lists, as dp get -l. */
	http(&r, "GET", "/api/v1alpha1/backuprepos?labelSelector=tier%3Dgold", NULL);
	ck_assert_int_eq(r.status, 200);
	ck_assert_ptr_nonnull(strstr(text(&r), "\"name\":\"nas\""));
	resp_free(&r);
	http(&r, "GET", "/api/v1alpha1/backuprepos?labelSelector=tier%3Dsilver", NULL);
	ck_assert_int_eq(r.status, 200);
	ck_assert_ptr_nonnull(strstr(text(&r), "\"items\":[]"));
	resp_free(&r);
	http(&r, "GET", "/api/v1alpha1/backuprepos?labelSelector=%3Dx", NULL);
	ck_assert_int_eq(r.status, 400);
	ck_assert_str_eq(error_of(&r), "bad label selector \"=x\"");
	resp_free(&r);

	/* PUT with a dry run: shows the object, stores nothing. */
	const char *as = "kind: ActionSet\napiVersion: dataprotection.dp.io/v1alpha1\n"
	                 "metadata: {name: dry}\nspec:\n  backupType: Full\n"
	                 "  backup: {backupData: {command: [sh, -c, 'true']}}\n";
	http(&r, "PUT", "/api/v1alpha1/actionsets/dry?dryRun=1", as);
	ck_assert_msg(r.status == 201, "%ld %s", r.status, text(&r));
	o = json_of(&r);
	ck_assert_str_eq(jstr(o, "metadata.name"), "dry");
	cJSON_Delete(o);
	resp_free(&r);
	http(&r, "GET", "/api/v1alpha1/actionsets/dry", NULL);
	ck_assert_int_eq(r.status, 404);
	resp_free(&r);
	/* Discovery names the plural kinds. */
	http(&r, "GET", "/api/v1alpha1", NULL);
	ck_assert_int_eq(r.status, 200);
	ck_assert_ptr_nonnull(strstr(text(&r), "\"name\":\"backuppolicies\""));
	resp_free(&r);
}
END_TEST

/* The whole corpus of malformed manifests through POST (named with ?source=
 * as dp apply -f NAME names them): each rejected with exactly the message
 * dp apply gives, nothing stored. */
START_TEST(test_bad_manifest_corpus)
{
	char dir[PATH_MAX + 32];
	snprintf(dir, sizeof(dir), "%s/bad-manifests", data_dir);
	DIR *d = opendir(dir);
	ck_assert_ptr_nonnull(d);
	struct dirent *e;
	int checked = 0;
	while ((e = readdir(d))) {
		size_t nl = strlen(e->d_name);
		if (e->d_name[0] == '.' || (nl > 9 && strcmp(e->d_name + nl - 9, ".expected") == 0))
			continue;
		char path[PATH_MAX + 300], expected[2048], url[512];
		size_t len;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		char *body = slurp(path, &len);
		if (strncmp(body, "# expect: ", 10) == 0) {
			snprintf(expected, sizeof(expected), "%.*s", (int)strcspn(body + 10, "\n"),
			         body + 10);
		} else {
			char side[PATH_MAX + 320];
			snprintf(side, sizeof(side), "%s.expected", path);
			char *x = slurp(side, NULL);
			snprintf(expected, sizeof(expected), "%.*s", (int)strcspn(x, "\n"), x);
			free(x);
		}
		snprintf(url, sizeof(url), "/api/v1alpha1?source=%s", e->d_name);
		resp r;
		http_ex(&r, "POST", url, token, body, len, NULL);
		ck_assert_msg(r.status == 400, "%s: %ld %s", e->d_name, r.status, text(&r));
		ck_assert_msg(strcmp(error_of(&r), expected) == 0, "%s:\n got  %s\n want %s",
		              e->d_name, error_of(&r), expected);
		resp_free(&r);
		free(body);
		checked++;
	}
	closedir(d);
	ck_assert_int_ge(checked, 40);
	ck_assert_uint_eq(count_resources(), 0);
}
END_TEST

/* PUT: one document, the validator's messages, the URL must agree. */
START_TEST(test_put_bad_bodies)
{
	static const struct {
		const char *file, *url;
	} cases[] = {
	    {"unknown-field.yaml", "/api/v1alpha1/backuprepos/nas"},
	    {"inline-passphrase.yaml", "/api/v1alpha1/backuprepos/nas"},
	    {"relative-path.json", "/api/v1alpha1/backuprepos/nas"},
	    {"json-syntax.json", "/api/v1alpha1/backuprepos/nas"},
	    {"yaml-syntax.yaml", "/api/v1alpha1/backuprepos/nas"},
	    {"bad-name.yaml", "/api/v1alpha1/backuprepos/nas"},
	    {"top-level-unknown.yaml", "/api/v1alpha1/backuprepos/nas"},
	};
	resp r;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char path[PATH_MAX + 300], expected[2048], url[512];
		size_t len;
		snprintf(path, sizeof(path), "%s/bad-manifests/%s", data_dir, cases[i].file);
		char *body = slurp(path, &len);
		if (strncmp(body, "# expect: ", 10) == 0) {
			snprintf(expected, sizeof(expected), "%.*s", (int)strcspn(body + 10, "\n"),
			         body + 10);
		} else {
			char side[PATH_MAX + 320];
			snprintf(side, sizeof(side), "%s.expected", path);
			char *x = slurp(side, NULL);
			snprintf(expected, sizeof(expected), "%.*s", (int)strcspn(x, "\n"), x);
			free(x);
		}
		snprintf(url, sizeof(url), "%s?source=%s", cases[i].url, cases[i].file);
		http_ex(&r, "PUT", url, token, body, len, NULL);
		ck_assert_msg(r.status == 400, "%s: %ld %s", cases[i].file, r.status, text(&r));
		ck_assert_msg(strcmp(error_of(&r), expected) == 0, "%s:\n got  %s\n want %s",
		              cases[i].file, error_of(&r), expected);
		resp_free(&r);
		free(body);
	}
	/* Without ?source the input is "request body". */
	http(&r, "PUT", "/api/v1alpha1/backuprepos/nas", "{\"kind\": ");
	ck_assert_int_eq(r.status, 400);
	ck_assert_msg(strncmp(error_of(&r), "request body:", 13) == 0, "%s", error_of(&r));
	resp_free(&r);
	http(&r, "PUT", "/api/v1alpha1/backuprepos/nas", "");
	ck_assert_int_eq(r.status, 400);
	ck_assert_str_eq(error_of(&r), "request body: no document found");
	resp_free(&r);
	/* The URL and the document must agree. */
	http(&r, "PUT", "/api/v1alpha1/backuprepos/other", repo_yaml);
	ck_assert_int_eq(r.status, 400);
	ck_assert_str_eq(error_of(&r), "request body: the document is backuprepo \"nas\" but the "
	                               "URL names backuprepo \"other\"; they must agree");
	resp_free(&r);
	http(&r, "PUT", "/api/v1alpha1/actionsets/nas", repo_yaml);
	ck_assert_int_eq(r.status, 400);
	ck_assert_ptr_nonnull(strstr(error_of(&r), "URL names actionset \"nas\""));
	resp_free(&r);
	/* Bytes that are not UTF-8, echoed by a message, become '?': JSON stays UTF-8. */
	http(&r, "PUT", "/api/v1alpha1/backuprepos/nas",
	     "{\"apiVersion\": \"dataprotection.dp.io/v1alpha1\", \"kind\": \"BackupRepo\", "
	     "\"metadata\": {\"name\": \"nas\"}, \"spec\": {\"p\xff\xc3\xa9\": 1}}");
	ck_assert_int_eq(r.status, 400);
	ck_assert_ptr_null(strchr(text(&r), '\xff'));
	ck_assert_msg(strstr(error_of(&r), "spec.p?\xc3\xa9: unknown field"), "%s", error_of(&r));
	resp_free(&r);
	/* One document only. */
	char two[1024];
	snprintf(two, sizeof(two), "%s---\n%s", repo_yaml, repo_yaml);
	http(&r, "PUT", "/api/v1alpha1/backuprepos/nas", two);
	ck_assert_int_eq(r.status, 400);
	ck_assert_str_eq(error_of(&r), "request body: holds 2 documents; PUT takes one (POST "
	                               "/api/v1alpha1 applies several)");
	resp_free(&r);
	/* A reference to a missing object. */
	const char *pol = "apiVersion: dataprotection.dp.io/v1alpha1\nkind: BackupPolicy\n"
	                  "metadata: {name: pg}\nspec:\n  backupRepoName: gone\n"
	                  "  target: {engine: postgresql, host: 127.0.0.1, port: 5432}\n"
	                  "  backupMethods: [{name: full, actionSetName: x}]\n";
	http(&r, "PUT", "/api/v1alpha1/backuppolicies/pg", pol);
	ck_assert_int_eq(r.status, 400);
	ck_assert_ptr_nonnull(strstr(error_of(&r), "not found"));
	resp_free(&r);
	ck_assert_uint_eq(count_resources(), 0);
}
END_TEST

START_TEST(test_too_large)
{
	size_t big = 2u << 20;
	char *body = malloc(big);
	memset(body, '#', big);
	resp r;
	/* Announced by Content-Length: refused before the body is read. */
	http_ex(&r, "PUT", "/api/v1alpha1/backuprepos/nas", token, body, big, NULL);
	ck_assert_int_eq(r.status, 413);
	ck_assert_str_eq(error_of(&r), "request body is larger than 1048576 bytes");
	resp_free(&r);
	http_ex(&r, "POST", "/api/v1alpha1", token, body, big, NULL);
	ck_assert_int_eq(r.status, 413);
	resp_free(&r);
	/* Chunked: counted as it arrives. */
	http_ex(&r, "PUT", "/api/v1alpha1/backuprepos/nas", token, body, big,
	        "Transfer-Encoding: chunked");
	ck_assert_int_eq(r.status, 413);
	resp_free(&r);
	/* A client that waits for 100 Continue gets the answer before sending. */
	http_ex(&r, "PUT", "/api/v1alpha1/backuprepos/nas", token, body, big,
	        "Expect: 100-continue");
	ck_assert_int_eq(r.status, 413);
	resp_free(&r);
	/* Without a token: 401, not a reset connection, whatever the size. */
	http_ex(&r, "PUT", "/api/v1alpha1/backuprepos/nas", NULL, body, big, NULL);
	ck_assert_int_eq(r.status, 401);
	resp_free(&r);
	http_ex(&r, "PUT", "/api/v1alpha1/backuprepos/nas", "wrong-token-0123456789", body, 1000,
	        "Expect: 100-continue");
	ck_assert_int_eq(r.status, 401);
	resp_free(&r);
	/* Just under the limit: a real manifest padded with a comment is fine. */
	size_t n = strlen(repo_yaml);
	memcpy(body, repo_yaml, n);
	memset(body + n, ' ', (1u << 20) - n - 1);
	body[n] = '#';
	body[(1u << 20) - 1] = '\n';
	http_ex(&r, "PUT", "/api/v1alpha1/backuprepos/nas", token, body, 1u << 20, NULL);
	ck_assert_msg(r.status == 201, "%ld %s", r.status, text(&r));
	resp_free(&r);
	free(body);
	/* Still serving. */
	http(&r, "GET", "/api/v1alpha1/backuprepos/nas", NULL);
	ck_assert_int_eq(r.status, 200);
	resp_free(&r);
}
END_TEST

START_TEST(test_delete)
{
	resp r;
	size_t len;
	char path[PATH_MAX + 64];
	snprintf(path, sizeof(path), "%s/good-manifests/postgres-full.yaml", data_dir);
	char *body = slurp(path, &len);
	http(&r, "POST", "/api/v1alpha1", body);
	ck_assert_int_eq(r.status, 200);
	resp_free(&r);
	free(body);
	/* Refused while used, as dp delete: 409 with the rule's message. */
	http(&r, "DELETE", "/api/v1alpha1/backuprepos/nas", NULL);
	ck_assert_int_eq(r.status, 409);
	ck_assert_str_eq(error_of(&r),
	                 "backuprepo \"nas\" is used by backuppolicy \"pg\"; delete that first");
	resp_free(&r);
	http(&r, "DELETE", "/api/v1alpha1/restores/r1", NULL);
	ck_assert_int_eq(r.status, 200);
	ck_assert_ptr_nonnull(strstr(text(&r), "restore \\\"r1\\\" deleted"));
	resp_free(&r);
	http(&r, "GET", "/api/v1alpha1/restores/r1", NULL);
	ck_assert_int_eq(r.status, 404);
	ck_assert_str_eq(error_of(&r), "restore \"r1\" not found");
	resp_free(&r);
	http(&r, "DELETE", "/api/v1alpha1/restores/r1", NULL);
	ck_assert_int_eq(r.status, 404);
	resp_free(&r);
	ck_assert_uint_eq(count_resources(), 5);
}
END_TEST

START_TEST(test_paths_and_methods)
{
	resp r;
	http(&r, "GET", "/api/v1alpha1/clusters", NULL);
	ck_assert_int_eq(r.status, 404);
	ck_assert_ptr_nonnull(strstr(error_of(&r), "unknown kind \"clusters\""));
	resp_free(&r);
	http(&r, "GET", "/api/v1alpha1/clusters/x", NULL);
	ck_assert_int_eq(r.status, 404);
	resp_free(&r);
	http(&r, "GET", "/api/v2/backups", NULL);
	ck_assert_int_eq(r.status, 404);
	resp_free(&r);
	http(&r, "GET", "/api/v1alpha1/backups/b1/logs", NULL);
	ck_assert_int_eq(r.status, 404);
	resp_free(&r);
	http(&r, "GET", "/api/v1alpha1/backups/a/b/c", NULL);
	ck_assert_int_eq(r.status, 404);
	resp_free(&r);
	http(&r, "GET", "/nothing-here", NULL);
	ck_assert_int_eq(r.status, 404);
	error_of(&r);
	resp_free(&r);
	http(&r, "GET", "/api/v1alpha1/backups/Bad_Name", NULL);
	ck_assert_int_eq(r.status, 400);
	ck_assert_ptr_nonnull(strstr(error_of(&r), "names use lowercase letters"));
	resp_free(&r);
	static const struct {
		const char *method, *path, *allow;
	} m[] = {
	    {"POST", "/api/v1alpha1/backups", "GET, HEAD"},
	    {"DELETE", "/api/v1alpha1/backups", "GET, HEAD"},
	    {"PATCH", "/api/v1alpha1/backups/b1", "GET, HEAD, PUT, DELETE"},
	    {"POST", "/api/v1alpha1/backups/b1", "GET, HEAD, PUT, DELETE"},
	    {"PUT", "/api/v1alpha1/backups/b1/events", "GET, HEAD"},
	    {"DELETE", "/api/v1alpha1", "GET, HEAD, POST"},
	};
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		http(&r, m[i].method, m[i].path, NULL);
		ck_assert_msg(r.status == 405, "%s %s: %ld", m[i].method, m[i].path, r.status);
		ck_assert_str_eq(r.allow, m[i].allow);
		error_of(&r);
		resp_free(&r);
	}
	http(&r, "HEAD", "/api/v1alpha1/backups", NULL);
	ck_assert_int_eq(r.status, 200);
	resp_free(&r);
}
END_TEST

/* ---- watches ---- */

typedef struct watcher {
	char path[256];
	char extra[128];
	pthread_mutex_t mu;
	dp_buf got;
	const char *until; /* stop once this text arrived */
	bool stop;
	CURLcode result;
	pthread_t th;
} watcher;

static size_t on_watch(char *p, size_t size, size_t n, void *arg)
{
	watcher *w = arg;
	pthread_mutex_lock(&w->mu);
	dp_buf_append(&w->got, p, size * n);
	dp_buf_append(&w->got, "", 1);
	w->got.len--;
	bool stop = w->stop || (w->until && strstr((char *)w->got.data, w->until));
	pthread_mutex_unlock(&w->mu);
	return stop ? 0 : size * n;
}

static int on_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
	(void)a, (void)b, (void)c, (void)d;
	watcher *w = arg;
	pthread_mutex_lock(&w->mu);
	bool stop = w->stop;
	pthread_mutex_unlock(&w->mu);
	return stop;
}

static void *watch_thread(void *arg)
{
	watcher *w = arg;
	char url[512], auth[256];
	CURL *h = curl_easy_init();
	struct curl_slist *hdrs = NULL;
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
	hdrs = curl_slist_append(hdrs, auth);
	if (w->extra[0])
		hdrs = curl_slist_append(hdrs, w->extra);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, w->path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_watch);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, w);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, w);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
	w->result = curl_easy_perform(h);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	return NULL;
}

static watcher *watch_start(const char *path, const char *extra, const char *until)
{
	watcher *w = calloc(1, sizeof(*w));
	snprintf(w->path, sizeof(w->path), "%s", path);
	snprintf(w->extra, sizeof(w->extra), "%s", extra ? extra : "");
	w->until = until;
	pthread_mutex_init(&w->mu, NULL);
	ck_assert_int_eq(pthread_create(&w->th, NULL, watch_thread, w), 0);
	return w;
}

/* Waits up to ms for text in what the watch received. */
static bool watch_wait(watcher *w, const char *needle, int ms)
{
	for (int i = 0; i < ms / 10; i++) {
		pthread_mutex_lock(&w->mu);
		bool found = w->got.data && strstr((char *)w->got.data, needle);
		pthread_mutex_unlock(&w->mu);
		if (found)
			return true;
		usleep(10000);
	}
	return false;
}

static char *watch_end(watcher *w)
{
	pthread_mutex_lock(&w->mu);
	w->stop = true;
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->th, NULL);
	char *s = strdup(w->got.data ? (char *)w->got.data : "");
	dp_buf_free(&w->got);
	pthread_mutex_destroy(&w->mu);
	free(w);
	return s;
}

START_TEST(test_watch_sees_change)
{
	resp r;
	/* Something before the watch: not replayed. */
	const char *as = "kind: ActionSet\napiVersion: dataprotection.dp.io/v1alpha1\n"
	                 "metadata: {name: before}\nspec:\n  backupType: Full\n"
	                 "  backup: {backupData: {command: [sh, -c, 'true']}}\n";
	http(&r, "PUT", "/api/v1alpha1/actionsets/before", as);
	ck_assert_int_eq(r.status, 201);
	resp_free(&r);

	watcher *all = watch_start("/api/v1alpha1?watch=1", NULL, NULL);
	watcher *repos = watch_start("/api/v1alpha1/backuprepos?watch=1", NULL, NULL);
	ck_assert(watch_wait(all, ": watching from resourceVersion 1\n", 5000));
	ck_assert(watch_wait(repos, ": watching from resourceVersion 1\n", 5000));

	http(&r, "PUT", "/api/v1alpha1/backuprepos/nas", repo_yaml);
	ck_assert_int_eq(r.status, 201);
	resp_free(&r);
	ck_assert(watch_wait(repos,
	                     "id: 2\ndata: {\"type\":\"create\",\"resourceVersion\":\"2\","
	                     "\"kind\":\"BackupRepo\",\"name\":\"nas\",\"object\":{",
	                     5000));
	/* A status change by another connection (the controller's). */
	dp_catalog *c;
	ck_assert_int_eq(dp_catalog_open(&c, catalog_path), 0);
	ck_assert_int_eq(
	    dp_catalog_set_status(c, DP_KIND_BACKUP_REPO, "nas", "{\"phase\":\"Ready\"}", 0, NULL),
	    0);
	dp_catalog_close(c);
	ck_assert(watch_wait(repos, "\"type\":\"status\",\"resourceVersion\":\"3\"", 5000));
	ck_assert(watch_wait(repos, "\"status\":{\"phase\":\"Ready\"}", 5000));
	http(&r, "DELETE", "/api/v1alpha1/backuprepos/nas", NULL);
	ck_assert_int_eq(r.status, 200);
	resp_free(&r);
	ck_assert(watch_wait(repos,
	                     "id: 4\ndata: {\"type\":\"delete\",\"resourceVersion\":\"4\",\"kind\":"
	                     "\"BackupRepo\",\"name\":\"nas\"}\n\n",
	                     5000));
	/* Another kind: the whole-catalog watch sees it, the repo watch does not. */
	char after[512];
	snprintf(after, sizeof(after), "%.*safter%s", (int)(strstr(as, "before") - as), as,
	         strstr(as, "before") + 6);
	http(&r, "PUT", "/api/v1alpha1/actionsets/after", after);
	ck_assert_msg(r.status == 201, "%ld %s", r.status, text(&r));
	resp_free(&r);
	ck_assert(watch_wait(all, "\"kind\":\"ActionSet\",\"name\":\"after\"", 5000));
	/* Heartbeats every 300 ms when idle. */
	ck_assert(watch_wait(repos, ": heartbeat\n\n", 3000));
	ck_assert(watch_wait(all, "id: 4\n", 5000));
	char *got_repos = watch_end(repos);
	char *got_all = watch_end(all);
	/* The kind filter: no ActionSet; the old one never replayed. */
	ck_assert_ptr_null(strstr(got_repos, "ActionSet"));
	ck_assert_ptr_null(strstr(got_all, "\"before\""));
	ck_assert_ptr_null(strstr(got_all, "id: 1\n"));
	free(got_repos);
	free(got_all);
}
END_TEST

START_TEST(test_watch_resume_and_filters)
{
	resp r;
	size_t len;
	char path[PATH_MAX + 64];
	snprintf(path, sizeof(path), "%s/good-manifests/postgres-full.yaml", data_dir);
	char *body = slurp(path, &len);
	http(&r, "POST", "/api/v1alpha1", body); /* versions 1..6 */
	ck_assert_int_eq(r.status, 200);
	resp_free(&r);
	free(body);

	/* ?resourceVersion=0: everything from the start, in order. */
	watcher *w = watch_start("/api/v1alpha1?watch=1&resourceVersion=0", NULL, "id: 6\n");
	ck_assert(watch_wait(w, "id: 6\n", 5000));
	char *got = watch_end(w);
	char *p1 = strstr(got, "id: 1\n"), *p3 = strstr(got, "id: 3\n"),
	     *p6 = strstr(got, "id: 6\n");
	ck_assert(p1 && p3 && p6 && p1 < p3 && p3 < p6);
	free(got);

	/* Last-Event-ID: resumes after it. (A bare ?watch is a flag too.) */
	w = watch_start("/api/v1alpha1?watch", "Last-Event-ID: 4", "id: 6\n");
	ck_assert(watch_wait(w, "id: 6\n", 5000));
	got = watch_end(w);
	ck_assert_ptr_null(strstr(got, "id: 4\n"));
	ck_assert_ptr_nonnull(strstr(got, "id: 5\n"));
	free(got);

	/* One object: only its changes. */
	w = watch_start("/api/v1alpha1/backuppolicies/pg?watch=1&resourceVersion=0", NULL, NULL);
	ck_assert(watch_wait(w, "\"name\":\"pg\"", 5000));
	ck_assert(watch_wait(w, ": heartbeat", 3000));
	got = watch_end(w);
	ck_assert_ptr_nonnull(strstr(got, "id: 3\n"));
	ck_assert_ptr_null(strstr(got, "id: 1\n"));
	ck_assert_ptr_null(strstr(got, "id: 4\n"));
	free(got);

	http(&r, "GET", "/api/v1alpha1/backups?watch=1&resourceVersion=abc", NULL);
	ck_assert_int_eq(r.status, 400);
	ck_assert_ptr_nonnull(strstr(error_of(&r), "resourceVersion \"abc\""));
	resp_free(&r);
	http_ex(&r, "GET", "/api/v1alpha1/backups?watch=1", NULL, NULL, 0, NULL);
	ck_assert_int_eq(r.status, 401);
	resp_free(&r);
}
END_TEST

/* dp_api_stop ends open watches and frees the port promptly. */
START_TEST(test_stop_with_watch_open)
{
	watcher *w = watch_start("/api/v1alpha1?watch=1", NULL, NULL);
	ck_assert(watch_wait(w, ": watching", 5000));
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	dp_api_stop(api);
	api = NULL;
	clock_gettime(CLOCK_MONOTONIC, &b);
	double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
	ck_assert_msg(secs < 2.0, "stop took %.2f s", secs);
	pthread_join(w->th, NULL);
	ck_assert_int_eq(w->result, CURLE_OK); /* the stream ended cleanly */
	dp_buf_free(&w->got);
	pthread_mutex_destroy(&w->mu);
	free(w);
	/* The port is closed. */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_ne(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	/* And can be bound again. */
	char listen[64];
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	dp_api_opts o = {.listen = listen, .home = home};
	ck_assert_msg(dp_api_start(&api, catalog_path, &o) == 0, "%s", dp_error_last());
	resp r;
	http(&r, "GET", "/healthz", NULL);
	ck_assert_int_eq(r.status, 200);
	resp_free(&r);
}
END_TEST

START_TEST(test_listen_errors)
{
	char listen[64];
	dp_api *a2 = NULL;
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	dp_api_opts o = {.listen = listen, .home = home};
	ck_assert_int_eq(dp_api_start(&a2, catalog_path, &o), DP_EEXIST);
	ck_assert_msg(strstr(dp_error_last(), listen) && strstr(dp_error_last(), "in use"), "%s",
	              dp_error_last());
	const char *bad[] = {"8780", "127.0.0.1", "127.0.0.1:http", ":8780", "[::1", "[::1]8780"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		o.listen = bad[i];
		ck_assert_msg(dp_api_start(&a2, catalog_path, &o) == DP_EUSAGE, "%s", bad[i]);
		ck_assert_ptr_nonnull(strstr(dp_error_last(), "HOST:PORT"));
	}
	/* IPv6 loopback works where the host has it. */
	o.listen = "[::1]:0";
	if (dp_api_start(&a2, catalog_path, &o) == 0) {
		int p6 = dp_api_port(a2);
		char url[64];
		snprintf(url, sizeof(url), "http://[::1]:%d/healthz", p6);
		CURL *h = curl_easy_init();
		curl_easy_setopt(h, CURLOPT_URL, url);
		curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
		dp_buf sink = {0};
		curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
		curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
		ck_assert_int_eq(curl_easy_perform(h), CURLE_OK);
		long st;
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
		ck_assert_int_eq(st, 200);
		curl_easy_cleanup(h);
		dp_buf_free(&sink);
		dp_api_stop(a2);
	}
}
END_TEST

/* The delete hook (the controller's): called instead of dp_catalog_delete. */
static int hook_calls;
static int delete_hook(void *arg, dp_catalog *c, dp_kind kind, const char *name)
{
	(void)c;
	hook_calls++;
	ck_assert_str_eq(arg, "ctx");
	if (kind == DP_KIND_BACKUP && strcmp(name, "b1") == 0)
		return DP_API_ACCEPTED;
	return dp_error_set(DP_EUSAGE, "%s \"%s\": refused by the hook", dp_kind_lower(kind), name);
}

START_TEST(test_delete_hook)
{
	dp_api_stop(api);
	dp_api_opts o = {.listen = "127.0.0.1:0",
	                 .home = home,
	                 .on_delete = delete_hook,
	                 .on_delete_arg = (void *)"ctx"};
	ck_assert_int_eq(dp_api_start(&api, catalog_path, &o), 0);
	port = dp_api_port(api);
	resp r;
	http(&r, "DELETE", "/api/v1alpha1/backups/b1", NULL);
	ck_assert_int_eq(r.status, 202);
	ck_assert_ptr_nonnull(strstr(text(&r), "is being deleted"));
	resp_free(&r);
	http(&r, "DELETE", "/api/v1alpha1/backups/b2", NULL);
	ck_assert_int_eq(r.status, 409);
	ck_assert_str_eq(error_of(&r), "backup \"b2\": refused by the hook");
	resp_free(&r);
	ck_assert_int_eq(hook_calls, 2);
}
END_TEST

static void restart_api(dp_api_opts *o)
{
	dp_api_stop(api);
	o->listen = "127.0.0.1:0";
	o->home = home;
	ck_assert_msg(dp_api_start(&api, catalog_path, o) == 0, "%s", dp_error_last());
	port = dp_api_port(api);
}

/* Watches may take 3/4 of the connections; the rest stays for requests. */
START_TEST(test_watch_limit)
{
	dp_api_opts o = {.max_connections = 8, .heartbeat_ms = 300, .poll_ms = 50};
	restart_api(&o);
	watcher *w[6];
	for (int i = 0; i < 6; i++) {
		w[i] = watch_start("/api/v1alpha1?watch=1", NULL, NULL);
		ck_assert(watch_wait(w[i], ": watching", 5000));
	}
	resp r;
	http(&r, "GET", "/api/v1alpha1/backups?watch=1", NULL);
	ck_assert_int_eq(r.status, 503);
	ck_assert_ptr_nonnull(strstr(error_of(&r), "too many watches open (6)"));
	resp_free(&r);
	http(&r, "PUT", "/api/v1alpha1/backuprepos/nas", repo_yaml);
	ck_assert_int_eq(r.status, 201);
	resp_free(&r);
	for (int i = 0; i < 6; i++) {
		ck_assert(watch_wait(w[i], "\"name\":\"nas\"", 5000));
		free(watch_end(w[i]));
	}
	/* Closed watches free their places (found at the next heartbeat). */
	usleep(800 * 1000);
	watcher *again = watch_start("/api/v1alpha1?watch=1", NULL, NULL);
	ck_assert(watch_wait(again, ": watching", 5000));
	free(watch_end(again));
}
END_TEST

/* Other paths go to the route hook (the controller's /metrics, dashboard). */
static int route_hook(void *arg, const char *method, const char *path, int authorized, dp_buf *body,
                      const char **ctype)
{
	(void)arg;
	if (strcmp(path, "/metrics") == 0 && strcmp(method, "GET") == 0) {
		*ctype = "text/plain; version=0.0.4";
		dp_buf_appendf(body, "dp_up 1\n");
		return 200;
	}
	if (strcmp(path, "/private") == 0) {
		if (!authorized)
			return DP_EAUTH;
		dp_buf_appendf(body, "secret\n");
		return 200;
	}
	if (strcmp(path, "/broken") == 0)
		return dp_error_set(DP_ERROR, "dashboard \"x\": cannot read it");
	return 0;
}

START_TEST(test_route_hook)
{
	dp_api_opts o = {.route = route_hook};
	restart_api(&o);
	resp r;
	http_ex(&r, "GET", "/metrics", NULL, NULL, 0, NULL);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(text(&r), "dp_up 1\n");
	ck_assert_str_eq(r.ctype, "text/plain; version=0.0.4");
	resp_free(&r);
	http_ex(&r, "GET", "/private", NULL, NULL, 0, NULL);
	ck_assert_int_eq(r.status, 401);
	error_of(&r);
	resp_free(&r);
	http(&r, "GET", "/private", NULL);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(text(&r), "secret\n");
	resp_free(&r);
	http(&r, "GET", "/broken", NULL);
	ck_assert_int_eq(r.status, 500);
	ck_assert_str_eq(error_of(&r), "dashboard \"x\": cannot read it");
	resp_free(&r);
	http(&r, "GET", "/elsewhere", NULL);
	ck_assert_int_eq(r.status, 404);
	resp_free(&r);
	/* The API itself still needs the token. */
	http_ex(&r, "GET", "/api/v1alpha1/backups", NULL, NULL, 0, NULL);
	ck_assert_int_eq(r.status, 401);
	resp_free(&r);
}
END_TEST

static Suite *api_suite(void)
{
	const char *env = getenv("DP_TEST_DATA");
	char guess[PATH_MAX];
	if (env) {
		snprintf(guess, sizeof(guess), "%s", env);
	} else {
		const char *f = __FILE__, *p = strstr(f, "tests/unit/");
		snprintf(guess, sizeof(guess), "%.*stests/data", p ? (int)(p - f) : 0, f);
	}
	if (!realpath(guess, data_dir))
		snprintf(data_dir, sizeof(data_dir), "%s", guess);

	Suite *s = suite_create("api");
	TCase *tc = tcase_create("api");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_healthz);
	tcase_add_test(tc, test_auth);
	tcase_add_test(tc, test_token_file_checks);
	tcase_add_test(tc, test_put_get_round_trip);
	tcase_add_test(tc, test_apply_manifest);
	tcase_add_test(tc, test_bad_manifest_corpus);
	tcase_add_test(tc, test_put_bad_bodies);
	tcase_add_test(tc, test_too_large);
	tcase_add_test(tc, test_delete);
	tcase_add_test(tc, test_paths_and_methods);
	tcase_add_test(tc, test_watch_sees_change);
	tcase_add_test(tc, test_watch_resume_and_filters);
	tcase_add_test(tc, test_stop_with_watch_open);
	tcase_add_test(tc, test_listen_errors);
	tcase_add_test(tc, test_delete_hook);
	tcase_add_test(tc, test_watch_limit);
	tcase_add_test(tc, test_route_hook);
	suite_add_tcase(s, tc);
	return s;
}

DP_TEST_MAIN(api_suite)

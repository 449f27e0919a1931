/*
 * The REST API next to other users of the same catalog, as dp-controller
 * runs it: changes made by the `dp` CLI (another process) reach a watch
 * opened through the API; the API and `dp get` show the same objects; the
 * audit log names each actor; many clients at once (PUTs, GETs and a watch
 * that must see every version, in order, with no gap); and no socket of the
 * server leaks into child processes (the controller forks workers).
 * The server runs in-process on 127.0.0.1 (a free port); libcurl is the
 * client; $BIN/dp must be built.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../harness/dp_test.h"
#include "dp/api.h"
#include "dp/catalog.h"
#include "dp/error.h"
#include "dp/log.h"

static char data_dir[PATH_MAX];
static char home[PATH_MAX + 16], catalog_path[PATH_MAX + 32], dp_bin[PATH_MAX];
static char token[128];
static dp_api *api;
static int port;

static void setup(void)
{
	dp_test_setup();
	dp_log_set_level(DP_LOG_WARN); /* one line per request otherwise */
	if (!realpath(dp_test_bin("dp"), dp_bin))
		ck_abort_msg("no dp program at %s (set BIN)", dp_test_bin("dp"));
	snprintf(home, sizeof(home), "%s/home", dp_test_dir);
	snprintf(catalog_path, sizeof(catalog_path), "%s/catalog.db", home);
	ck_assert_int_eq(mkdir(home, 0700), 0);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	dp_api_opts o = {.listen = "127.0.0.1:0", .home = home, .heartbeat_ms = 500, .poll_ms = 50};
	ck_assert_msg(dp_api_start(&api, catalog_path, &o) == 0, "%s", dp_error_last());
	port = dp_api_port(api);
	ck_assert_int_eq(dp_api_token(token, sizeof(token), home), 0);
}

static void teardown(void)
{
	dp_api_stop(api);
	curl_global_cleanup();
	dp_test_teardown();
}

#define DP(res, fmt, ...)                                                                          \
	dp_test_run(res, "cd '%s' && export DP_HOME='%s' && '%s' " fmt, data_dir, home, dp_bin,    \
	            ##__VA_ARGS__)

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	return dp_buf_append(arg, p, size * n) == 0 ? size * n : 0;
}

/* One request; returns the status, body in out (NUL-terminated). Thread-safe. */
static long request(const char *method, const char *path, const char *body, dp_buf *out)
{
	char url[512], auth[256];
	CURL *h = curl_easy_init();
	struct curl_slist *hdrs = NULL;
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
	hdrs = curl_slist_append(hdrs, auth);
	hdrs = curl_slist_append(hdrs, "Expect:");
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	if (body) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
	long status = -1;
	if (curl_easy_perform(h) == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	dp_buf_append(out, "", 1);
	out->len--;
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	return status;
}

/* ---- a watch on its own thread ---- */

typedef struct watcher {
	pthread_mutex_t mu;
	dp_buf got;
	bool stop;
	pthread_t th;
	char path[256];
} watcher;

static size_t on_watch(char *p, size_t size, size_t n, void *arg)
{
	watcher *w = arg;
	pthread_mutex_lock(&w->mu);
	dp_buf_append(&w->got, p, size * n);
	dp_buf_append(&w->got, "", 1);
	w->got.len--;
	bool stop = w->stop;
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
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, w->path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_watch);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, w);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, w);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
	curl_easy_perform(h);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	return NULL;
}

static watcher *watch_start(const char *path)
{
	watcher *w = calloc(1, sizeof(*w));
	snprintf(w->path, sizeof(w->path), "%s", path);
	pthread_mutex_init(&w->mu, NULL);
	ck_assert_int_eq(pthread_create(&w->th, NULL, watch_thread, w), 0);
	return w;
}

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

/* ---- tests ---- */

START_TEST(test_cli_changes_reach_watch)
{
	watcher *w = watch_start("/api/v1alpha1?watch=1");
	ck_assert(watch_wait(w, ": watching from resourceVersion 0", 5000));

	dp_test_result r;
	ck_assert_int_eq(DP(&r, "apply -f good-manifests/postgres-full.yaml"), 0);
	dp_test_result_free(&r);
	ck_assert(watch_wait(w, "\"kind\":\"Restore\",\"name\":\"r1\"", 5000));
	ck_assert_int_eq(DP(&r, "delete restore r1"), 0);
	dp_test_result_free(&r);
	ck_assert(watch_wait(w, "\"type\":\"delete\"", 5000));
	char *got = watch_end(w);
	/* Every version from the first to the delete, with no gap (how many
	 * there are depends on the built-in ActionSets dp loads first). */
	const char *del = strstr(got, "\"type\":\"delete\"");
	const char *rv = del ? strstr(del, "\"resourceVersion\":\"") : NULL;
	ck_assert_msg(rv != NULL, "no delete event with a version in:\n%s", got);
	long last = strtol(rv + strlen("\"resourceVersion\":\""), NULL, 10);
	ck_assert_int_ge(last, 7);
	for (long i = 1; i <= last; i++) {
		char id[32];
		snprintf(id, sizeof(id), "id: %ld\n", i);
		ck_assert_msg(strstr(got, id), "missing %s in:\n%s", id, got);
	}
	free(got);

	/* The API shows what dp apply stored, byte for byte as dp get -o json. */
	dp_buf b = {0};
	ck_assert_int_eq(request("GET", "/api/v1alpha1/backuppolicies/pg?pretty=1", NULL, &b), 200);
	ck_assert_int_eq(DP(&r, "get backuppolicy pg -o json"), 0);
	ck_assert_str_eq((char *)b.data, r.out);
	dp_test_result_free(&r);
	dp_buf_free(&b);

	/* And dp sees what the API stored; the audit log tells them apart. */
	const char *as = "apiVersion: dataprotection.dp.io/v1alpha1\nkind: ActionSet\n"
	                 "metadata: {name: from-api}\nspec:\n  backupType: Full\n"
	                 "  backup: {backupData: {command: [sh, -c, 'true']}}\n";
	ck_assert_int_eq(request("PUT", "/api/v1alpha1/actionsets/from-api", as, &b), 201);
	dp_buf_free(&b);
	ck_assert_int_eq(DP(&r, "get actionsets"), 0);
	ck_assert_ptr_nonnull(strstr(r.out, "from-api"));
	dp_test_result_free(&r);
	dp_catalog *c;
	dp_audit_entry *au;
	size_t n;
	ck_assert_int_eq(dp_catalog_open(&c, catalog_path), 0);
	ck_assert_int_eq(dp_catalog_audit(c, 0, 0, &au, &n), 0);
	ck_assert_uint_ge(n, 8);
	for (size_t i = 0; i + 1 < n; i++)
		ck_assert_str_ne(au[i].actor, DP_API_ACTOR);
	ck_assert_str_eq(au[n - 1].actor, DP_API_ACTOR);
	ck_assert_str_eq(au[n - 1].name, "from-api");
	dp_audit_free(au, n);
	dp_catalog_close(c);
}
END_TEST

#define CLIENTS 16
#define PER_CLIENT 25

typedef struct client {
	int id;
	int failures;
	char last_error[512];
} client;

static void *client_thread(void *arg)
{
	client *cl = arg;
	for (int i = 0; i < PER_CLIENT; i++) {
		char name[64], body[512], path[128];
		snprintf(name, sizeof(name), "as-%02d-%02d", cl->id, i);
		snprintf(body, sizeof(body),
		         "{\"apiVersion\":\"dataprotection.dp.io/v1alpha1\",\"kind\":\"ActionSet\","
		         "\"metadata\":{\"name\":\"%s\"},\"spec\":{\"backupType\":\"Full\","
		         "\"backup\":{\"backupData\":{\"command\":[\"sh\",\"-c\",\"true\"]}}}}",
		         name);
		snprintf(path, sizeof(path), "/api/v1alpha1/actionsets/%s", name);
		dp_buf b = {0};
		long st = request("PUT", path, body, &b);
		if (st != 201) {
			cl->failures++;
			snprintf(cl->last_error, sizeof(cl->last_error), "PUT %s: %ld %s", name, st,
			         b.data ? (char *)b.data : "");
		}
		dp_buf_free(&b);
		st = request("GET", path, NULL, &b);
		if (st != 200) {
			cl->failures++;
			snprintf(cl->last_error, sizeof(cl->last_error), "GET %s: %ld", name, st);
		}
		dp_buf_free(&b);
	}
	return NULL;
}

START_TEST(test_many_clients)
{
	watcher *w = watch_start("/api/v1alpha1/actionsets?watch=1");
	ck_assert(watch_wait(w, ": watching from resourceVersion 0", 5000));
	pthread_t th[CLIENTS];
	client cl[CLIENTS];
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < CLIENTS; i++) {
		cl[i] = (client){.id = i};
		ck_assert_int_eq(pthread_create(&th[i], NULL, client_thread, &cl[i]), 0);
	}
	for (int i = 0; i < CLIENTS; i++)
		pthread_join(th[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	int total = CLIENTS * PER_CLIENT;
	printf("api: %d clients, %d PUT + %d GET in %.2f s (%.0f requests/s)\n", CLIENTS, total,
	       total, secs, 2 * total / secs);
	for (int i = 0; i < CLIENTS; i++)
		ck_assert_msg(cl[i].failures == 0, "client %d: %d failures, last: %s", i,
		              cl[i].failures, cl[i].last_error);
	/* The watch saw every version, in order, no gap, no repeat. */
	char last[32];
	snprintf(last, sizeof(last), "id: %d\n", total);
	ck_assert(watch_wait(w, last, 10000));
	char *got = watch_end(w);
	int64_t expect = 1;
	for (const char *p = strstr(got, "\nid: "); p; p = strstr(p + 1, "\nid: ")) {
		int64_t id = strtoll(p + 5, NULL, 10);
		ck_assert_msg(id == expect, "event id %" PRId64 ", expected %" PRId64, id, expect);
		expect++;
	}
	ck_assert_int_eq(expect, total + 1);
	free(got);
	dp_buf b = {0};
	ck_assert_int_eq(request("GET", "/api/v1alpha1/actionsets", NULL, &b), 200);
	int items = 0;
	for (const char *p = strstr((char *)b.data, "\"kind\":\"ActionSet\""); p;
	     p = strstr(p + 1, "\"kind\":\"ActionSet\""))
		items++;
	ck_assert_int_eq(items, total);
	dp_buf_free(&b);
}
END_TEST

/* Children (workers, forked by the controller) must not inherit the
 * server's sockets: the listening one and every accepted connection (the
 * ones whose local port is the server's) are close-on-exec. (libcurl's
 * client sockets are not, which is why this looks at the descriptors rather
 * than at a child's.) */
START_TEST(test_no_socket_leaks_to_children)
{
	watcher *w = watch_start("/api/v1alpha1?watch=1");
	ck_assert(watch_wait(w, ": watching", 5000));
	int server_fds = 0;
	for (int fd = 0; fd < 4096; fd++) {
		int fl = fcntl(fd, F_GETFD);
		struct sockaddr_in sa;
		socklen_t sl = sizeof(sa);
		if (fl < 0 || getsockname(fd, (struct sockaddr *)&sa, &sl) != 0 ||
		    sa.sin_family != AF_INET || ntohs(sa.sin_port) != port)
			continue;
		server_fds++;
		ck_assert_msg(fl & FD_CLOEXEC, "server socket fd %d is inherited by children", fd);
	}
	ck_assert_int_ge(server_fds, 2); /* listening + the watch's connection */
	free(watch_end(w));
}
END_TEST

static Suite *api_cli_suite(void)
{
	const char *env = getenv("DP_TEST_DATA");
	char guess[PATH_MAX];
	if (env) {
		snprintf(guess, sizeof(guess), "%s", env);
	} else {
		const char *f = __FILE__, *p = strstr(f, "tests/integration/");
		snprintf(guess, sizeof(guess), "%.*stests/data", p ? (int)(p - f) : 0, f);
	}
	if (!realpath(guess, data_dir))
		snprintf(data_dir, sizeof(data_dir), "%s", guess);
	Suite *s = suite_create("api_cli");
	TCase *tc = tcase_create("api_cli");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_cli_changes_reach_watch);
	tcase_add_test(tc, test_many_clients);
	tcase_add_test(tc, test_no_socket_leaks_to_children);
	suite_add_tcase(s, tc);
	return s;
}

DP_TEST_MAIN(api_cli_suite)

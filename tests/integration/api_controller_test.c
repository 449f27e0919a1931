/*
 * The REST API as served by the real $BIN/dp-controller (a child process on
 * 127.0.0.1, a free port, DP_HOME in the test's temp dir, stopped by its
 * PID): the token file it makes, a BackupRepo PUT through the API and
 * pre-checked by the controller (the watch sees PreChecking then Ready, the
 * audit log names "api" for the create), a DELETE, and SIGTERM with a watch
 * open (the controller exits 0 promptly and the stream ends cleanly).
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../harness/dp_test.h"
#include "dp/api.h"
#include "dp/catalog.h"
#include "dp/error.h"

static char methods_dir[PATH_MAX];
static char home[PATH_MAX + 16], catalog_path[PATH_MAX + 32], log_path[PATH_MAX + 32];
static char token[128];
static int port;
static pid_t ctl_pid = -1;

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t sl = sizeof(sa);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	close(fd);
	return ntohs(sa.sin_port);
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	return dp_buf_append(arg, p, size * n) == 0 ? size * n : 0;
}

static long request(const char *method, const char *path, const char *tok, const char *body,
                    dp_buf *out)
{
	char url[512], auth[256];
	CURL *h = curl_easy_init();
	struct curl_slist *hdrs = NULL;
	if (tok) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", tok);
		hdrs = curl_slist_append(hdrs, auth);
	}
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
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
	long status = -1;
	if (curl_easy_perform(h) == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	dp_buf_append(out, "", 1);
	out->len--;
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	return status;
}

static char *log_text(void)
{
	FILE *f = fopen(log_path, "r");
	dp_buf b = {0};
	char tmp[4096];
	size_t n;
	while (f && (n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		dp_buf_append(&b, tmp, n);
	if (f)
		fclose(f);
	dp_buf_append(&b, "", 1);
	return (char *)b.data;
}

static void start_controller(void)
{
	char listen[64], bin[PATH_MAX];
	port = free_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	if (!realpath(dp_test_bin("dp-controller"), bin))
		ck_abort_msg("no dp-controller program at %s (set BIN)",
		             dp_test_bin("dp-controller"));
	ctl_pid = fork();
	ck_assert_int_ge(ctl_pid, 0);
	if (ctl_pid == 0) {
		/* A failed check exits the test without its teardown: never leave
		 * the controller running behind it. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		setenv("DP_HOME", home, 1);
		setenv("DP_PASSPHRASE", "correct horse battery staple", 1);
		FILE *f = freopen(log_path, "a", stderr);
		(void)f;
		execl(bin, "dp-controller", "--listen", listen, "--methods", methods_dir,
		      "--sync-ms", "200", (char *)NULL);
		_exit(127);
	}
	/* Up when /healthz answers. */
	for (int i = 0; i < 200; i++) {
		dp_buf b = {0};
		long st = request("GET", "/healthz", NULL, NULL, &b);
		dp_buf_free(&b);
		if (st == 200) {
			ck_assert_int_eq(dp_api_token(token, sizeof(token), home), 0);
			return;
		}
		int status;
		if (waitpid(ctl_pid, &status, WNOHANG) == ctl_pid) {
			ctl_pid = -1;
			char *l = log_text();
			ck_abort_msg("dp-controller exited early:\n%s", l);
		}
		usleep(50000);
	}
	char *l = log_text();
	ck_abort_msg("dp-controller did not answer on %s:\n%s", listen, l);
}

/* SIGTERM, then up to ms for it to exit; returns its wait status (-1: had
 * to be killed). */
static int stop_controller(int ms)
{
	if (ctl_pid <= 0)
		return 0;
	kill(ctl_pid, SIGTERM);
	int status = 0;
	for (int i = 0; i < ms / 10; i++) {
		if (waitpid(ctl_pid, &status, WNOHANG) == ctl_pid) {
			ctl_pid = -1;
			return status;
		}
		usleep(10000);
	}
	kill(ctl_pid, SIGKILL);
	waitpid(ctl_pid, &status, 0);
	ctl_pid = -1;
	return -1;
}

static void setup(void)
{
	dp_test_setup();
	snprintf(home, sizeof(home), "%s/home", dp_test_dir);
	snprintf(catalog_path, sizeof(catalog_path), "%s/catalog.db", home);
	snprintf(log_path, sizeof(log_path), "%s/controller.log", dp_test_dir);
	ck_assert_int_eq(mkdir(home, 0700), 0);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	start_controller();
}

static void teardown(void)
{
	stop_controller(5000);
	curl_global_cleanup();
	dp_test_teardown();
}

/* ---- a watch on its own thread ---- */

typedef struct watcher {
	pthread_mutex_t mu;
	dp_buf got;
	bool stop;
	CURLcode result;
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
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
	w->result = curl_easy_perform(h);
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

/* ---- tests ---- */

START_TEST(test_repo_through_controller)
{
	/* The token file the controller made. */
	char tpath[PATH_MAX + 64];
	struct stat st;
	snprintf(tpath, sizeof(tpath), "%s/%s", home, DP_API_TOKEN_FILE);
	ck_assert_int_eq(stat(tpath, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	dp_buf b = {0};
	ck_assert_int_eq(request("GET", "/api/v1alpha1/backuprepos", NULL, NULL, &b), 401);
	dp_buf_free(&b);

	watcher *w = watch_start("/api/v1alpha1/backuprepos?watch=1");
	ck_assert(watch_wait(w, ": watching", 5000));
	char body[PATH_MAX + 512];
	snprintf(body, sizeof(body),
	         "apiVersion: dataprotection.dp.io/v1alpha1\nkind: BackupRepo\n"
	         "metadata: {name: nas}\nspec:\n  posix: {path: %s/repo}\n"
	         "  encryption: {passphraseFrom: {env: DP_PASSPHRASE}}\n",
	         dp_test_dir);
	long s = request("PUT", "/api/v1alpha1/backuprepos/nas", token, body, &b);
	ck_assert_msg(s == 201, "%ld %s", s, (char *)b.data);
	dp_buf_free(&b);
	/* The controller pre-checks it; the watch sees the phases. */
	ck_assert_msg(watch_wait(w, "\"phase\":\"Ready\"", 15000), "no Ready; log:\n%s",
	              log_text());
	ck_assert(watch_wait(w, "\"type\":\"status\"", 1000));
	ck_assert_int_eq(request("GET", "/api/v1alpha1/backuprepos/nas", token, NULL, &b), 200);
	ck_assert_ptr_nonnull(strstr((char *)b.data, "\"phase\":\"Ready\""));
	dp_buf_free(&b);

	dp_catalog *c;
	dp_audit_entry *au;
	size_t n;
	ck_assert_int_eq(dp_catalog_open(&c, catalog_path), 0);
	ck_assert_int_eq(dp_catalog_audit(c, 0, 0, &au, &n), 0);
	bool api_create = false;
	for (size_t i = 0; i < n; i++)
		if (strcmp(au[i].name, "nas") == 0 && strcmp(au[i].action, "create") == 0)
			api_create = strcmp(au[i].actor, DP_API_ACTOR) == 0;
	ck_assert(api_create);
	dp_audit_free(au, n);
	dp_catalog_close(c);

	/* SIGTERM with the watch open: a clean exit, a clean end of stream. */
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int status = stop_controller(10000);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	ck_assert_msg(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
	              "dp-controller did not exit cleanly (%d); log:\n%s", status, log_text());
	ck_assert_msg(secs < 5.0, "stop took %.1f s", secs);
	pthread_join(w->th, NULL);
	ck_assert_int_eq(w->result, CURLE_OK);
	dp_buf_free(&w->got);
	pthread_mutex_destroy(&w->mu);
	free(w);
	/* Its log never shows the token. */
	char *l = log_text();
	ck_assert_ptr_null(strstr(l, token));
	free(l);
}
END_TEST

START_TEST(test_delete_through_controller)
{
	const char *as = "apiVersion: dataprotection.dp.io/v1alpha1\nkind: ActionSet\n"
	                 "metadata: {name: mine}\nspec:\n  backupType: Full\n"
	                 "  backup: {backupData: {command: [sh, -c, 'true']}}\n";
	dp_buf b = {0};
	ck_assert_int_eq(request("PUT", "/api/v1alpha1/actionsets/mine", token, as, &b), 201);
	dp_buf_free(&b);
	ck_assert_int_eq(request("DELETE", "/api/v1alpha1/actionsets/mine", token, NULL, &b), 200);
	dp_buf_free(&b);
	ck_assert_int_eq(request("GET", "/api/v1alpha1/actionsets/mine", token, NULL, &b), 404);
	dp_buf_free(&b);
	/* A Backup that does not exist: 404 through the controller's delete too. */
	ck_assert_int_eq(request("DELETE", "/api/v1alpha1/backups/nope", token, NULL, &b), 404);
	ck_assert_ptr_nonnull(strstr((char *)b.data, "\"code\":404"));
	dp_buf_free(&b);
}
END_TEST

static Suite *api_controller_suite(void)
{
	const char *f = __FILE__, *p = strstr(f, "tests/integration/");
	char guess[PATH_MAX];
	snprintf(guess, sizeof(guess), "%.*smethods", p ? (int)(p - f) : 0, f);
	if (!realpath(guess, methods_dir))
		snprintf(methods_dir, sizeof(methods_dir), "%s", guess);
	Suite *s = suite_create("api_controller");
	TCase *tc = tcase_create("api_controller");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 90);
	tcase_add_test(tc, test_repo_through_controller);
	tcase_add_test(tc, test_delete_through_controller);
	suite_add_tcase(s, tc);
	return s;
}

DP_TEST_MAIN(api_controller_suite)

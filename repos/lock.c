/*
 * Repository locks: locks/<random id> objects holding plaintext JSON
 *   {"exclusive":bool,"host":"...","pid":N,"time":<unix heartbeat>,"what":"..."}
 * Shared locks (push, check, snapshot removal) coexist; an exclusive one
 * (prune) excludes all others. A lock is stale, and is removed by whoever
 * finds it, when its process is gone (same host, no such pid) or its
 * heartbeat is older than DP_LOCK_STALE_SECONDS. The holder rewrites its
 * lock every DP_LOCK_REFRESH_SECONDS from a small thread.
 *
 * "Same host" is not enough to trust a pid: containers share host names but
 * not pid namespaces. A lock records its node (boot id and pid namespace);
 * a pid is only probed when the node is ours.
 *
 * Two lockers racing are resolved by writing first and then looking again:
 * a locker that sees a conflicting lock after writing its own withdraws
 * and retries after a random pause.
 *
 * A holder whose lock was removed by someone who thought it dead (a process
 * paused past the stale limit, a heartbeat that kept failing) must not
 * carry on as if it still held it: the heartbeat stops rewriting a lock it
 * finds gone, and dp_lock_check tells the holder before it commits anything.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dp/backend.h"
#include "dp/error.h"
#include "dp/log.h"
#include "format.h"

struct dp_lock {
	dp_repo *r;
	char key[80];
	char what[64];
	bool exclusive;
	pthread_t thread;
	bool running;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	bool lost; /* the lock object vanished under us */
	time_t last_ok; /* last successful write of the lock */
};

/* "<boot id>/<pid namespace>": who can interpret our pids. */
static void node_id(char *out, size_t cap)
{
	char boot[64] = "", ns[64] = "";
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
	if (f) {
		if (!fgets(boot, sizeof(boot), f))
			boot[0] = 0;
		fclose(f);
		boot[strcspn(boot, "\n")] = 0;
	}
	ssize_t n = readlink("/proc/self/ns/pid", ns, sizeof(ns) - 1);
	ns[n > 0 ? n : 0] = 0;
	snprintf(out, cap, "%s/%s", boot, ns);
}

static int lock_write(dp_lock *l)
{
	dp_buf b = {0};
	char node[160];
	node_id(node, sizeof(node));
	time_t now = time(NULL);
	int rc = dp_buf_appendf(&b,
	                        "{\"exclusive\":%s,\"host\":\"%s\",\"node\":\"%s\",\"pid\":%ld,"
	                        "\"time\":%lld,\"what\":\"%s\"}\n",
	                        l->exclusive ? "true" : "false", l->r->host, node, (long)getpid(),
	                        (long long)now, l->what);
	if (!rc)
		rc = l->r->b->put(l->r->b, l->key, b.data, b.len);
	dp_buf_free(&b);
	if (!rc) {
		pthread_mutex_lock(&l->mu);
		l->last_ok = now;
		pthread_mutex_unlock(&l->mu);
	}
	return rc;
}

struct scan {
	dp_lock *self;
	char conflict[512];
	bool found;
};

static int scan_one(const char *key, uint64_t size, void *arg)
{
	(void)size;
	struct scan *s = arg;
	dp_lock *l = s->self;
	dp_buf b = {0};
	if (strcmp(key, l->key) == 0)
		return 0;
	int rc = dp_backend_get_all(l->r->b, key, &b);
	if (rc == DP_ENOTFOUND) {
		dp_error_clear();
		return 0;
	}
	if (rc)
		return rc;
	cJSON *j = cJSON_Parse((const char *)b.data);
	dp_buf_free(&b);
	const cJSON *ex = cJSON_GetObjectItemCaseSensitive(j, "exclusive");
	const cJSON *host = cJSON_GetObjectItemCaseSensitive(j, "host");
	const cJSON *pid = cJSON_GetObjectItemCaseSensitive(j, "pid");
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "time");
	const cJSON *what = cJSON_GetObjectItemCaseSensitive(j, "what");
	const cJSON *node = cJSON_GetObjectItemCaseSensitive(j, "node");
	char mynode[160];
	node_id(mynode, sizeof(mynode));
	bool stale;
	if (!cJSON_IsString(host) || !cJSON_IsNumber(pid) || !cJSON_IsNumber(t)) {
		stale = true; /* unreadable: left by a broken writer */
	} else {
		long long age = (long long)time(NULL) - (long long)t->valuedouble;
		bool same_node = strcmp(host->valuestring, l->r->host) == 0 &&
		                 cJSON_IsString(node) && strcmp(node->valuestring, mynode) == 0;
		bool dead = same_node && kill((pid_t)pid->valuedouble, 0) != 0 && errno == ESRCH;
		stale = dead || age > DP_LOCK_STALE_SECONDS;
	}
	if (stale) {
		dp_info("removing stale lock \"%s\"", key);
		l->r->b->remove(l->r->b, key);
	} else if (l->exclusive || cJSON_IsTrue(ex)) {
		s->found = true;
		snprintf(s->conflict, sizeof(s->conflict),
		         "%s lock held by %s (host \"%s\", pid %ld, heartbeat %llds ago)",
		         cJSON_IsTrue(ex) ? "an exclusive" : "a shared",
		         cJSON_IsString(what) ? what->valuestring : "another process",
		         host->valuestring, (long)pid->valuedouble,
		         (long long)time(NULL) - (long long)t->valuedouble);
	}
	cJSON_Delete(j);
	return 0;
}

static int scan(dp_lock *l, struct scan *s)
{
	memset(s, 0, sizeof(*s));
	s->self = l;
	return l->r->b->list(l->r->b, "locks/", scan_one, s);
}

static void *heartbeat(void *arg)
{
	dp_lock *l = arg;
	pthread_mutex_lock(&l->mu);
	while (!l->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += DP_LOCK_REFRESH_SECONDS;
		pthread_cond_timedwait(&l->cv, &l->mu, &ts);
		if (l->stop)
			break;
		pthread_mutex_unlock(&l->mu);
		uint64_t size;
		int rc = l->r->b->stat(l->r->b, l->key, &size);
		if (rc == DP_ENOTFOUND) {
			/* Someone judged us dead and removed it: rewriting it would
			 * hide that. The holder learns it from dp_lock_check. */
			dp_warn("lock \"%s\" was removed by another process", l->key);
			pthread_mutex_lock(&l->mu);
			l->lost = true;
			break;
		}
		if (rc == 0)
			rc = lock_write(l);
		if (rc != 0)
			dp_warn("could not refresh lock \"%s\": %s", l->key, dp_error_last());
		pthread_mutex_lock(&l->mu);
	}
	pthread_mutex_unlock(&l->mu);
	return NULL;
}

static void pause_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

int dp_lock_acquire(dp_lock **out, dp_repo *r, bool exclusive, const char *what)
{
	uint8_t rnd[16];
	char hex[33];
	struct scan s;
	int rc;
	dp_lock *l = calloc(1, sizeof(*l));
	if (!l)
		return dp_error_set(DP_ERROR, "out of memory");
	l->r = r;
	l->exclusive = exclusive;
	snprintf(l->what, sizeof(l->what), "%s", what);
	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->cv, NULL);
	if ((rc = dp_random(rnd, sizeof(rnd))))
		goto fail;
	dp_hex(hex, rnd, sizeof(rnd));
	snprintf(l->key, sizeof(l->key), "locks/%s", hex);

	time_t deadline = time(NULL) + r->lock_wait;
	for (;;) {
		if ((rc = scan(l, &s)))
			goto fail;
		if (!s.found) {
			if ((rc = lock_write(l)))
				goto fail;
			if ((rc = scan(l, &s))) {
				r->b->remove(r->b, l->key);
				goto fail;
			}
			if (!s.found)
				break;
			r->b->remove(r->b, l->key); /* lost a race: withdraw */
		}
		if (time(NULL) >= deadline) {
			rc = dp_error_set(DP_ELOCKED,
			                  "cannot %s: the repository is locked: %s; wait for it to "
			                  "finish or pass --wait SECONDS",
			                  what, s.conflict);
			goto fail;
		}
		uint8_t j;
		dp_random(&j, 1);
		pause_ms(200 + 4L * j);
	}
	if (pthread_create(&l->thread, NULL, heartbeat, l) == 0)
		l->running = true;
	*out = l;
	return 0;
fail:
	pthread_mutex_destroy(&l->mu);
	pthread_cond_destroy(&l->cv);
	free(l);
	return rc;
}

int dp_lock_check(dp_lock *l)
{
	uint64_t size;
	pthread_mutex_lock(&l->mu);
	bool lost = l->lost;
	long long age = (long long)(time(NULL) - l->last_ok);
	pthread_mutex_unlock(&l->mu);
	if (!lost && age < DP_LOCK_STALE_SECONDS / 2) {
		int rc = l->r->b->stat(l->r->b, l->key, &size);
		if (rc && rc != DP_ENOTFOUND)
			return rc;
		lost = rc == DP_ENOTFOUND;
	}
	if (lost)
		return dp_error_set(DP_ELOCKED,
		                    "this %s lost its lock: another process judged it dead and "
		                    "removed it, so data it relied on may be gone; nothing was "
		                    "committed: run it again",
		                    l->what);
	if (age >= DP_LOCK_STALE_SECONDS / 2)
		return dp_error_set(DP_ELOCKED,
		                    "this %s could not refresh its lock for %llds, so other "
		                    "processes may have judged it dead; nothing was committed: run "
		                    "it again",
		                    l->what, age);
	return 0;
}

void dp_lock_release(dp_lock *l)
{
	if (!l)
		return;
	if (l->running) {
		pthread_mutex_lock(&l->mu);
		l->stop = true;
		pthread_cond_signal(&l->cv);
		pthread_mutex_unlock(&l->mu);
		pthread_join(l->thread, NULL);
	}
	/* Release runs on error paths: keep the error that matters, not a
	 * failure to remove the lock (which goes stale and is cleaned later). */
	int saved_rc = dp_error_code();
	char saved[1024];
	snprintf(saved, sizeof(saved), "%s", dp_error_last());
	if (l->r->b->remove(l->r->b, l->key) != 0)
		dp_warn("could not remove lock \"%s\": %s", l->key, dp_error_last());
	dp_error_restore(saved_rc, saved);
	pthread_mutex_destroy(&l->mu);
	pthread_cond_destroy(&l->cv);
	free(l);
}

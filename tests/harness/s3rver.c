/*
 * Starting and stopping a throwaway s3rver for tests (see s3rver.h).
 * Test-only code. The atexit hook kills only servers started by the
 * calling process, so forked check children that exit do not touch the
 * parent's server.
 */
#include "s3rver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <netinet/in.h>
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

#define MAX_SERVERS 8

static struct {
	pid_t pid;
	pid_t owner;
} servers[MAX_SERVERS];
static bool hook_set;

static void kill_all(void)
{
	for (int i = 0; i < MAX_SERVERS; i++) {
		if (servers[i].pid > 0 && servers[i].owner == getpid()) {
			kill(servers[i].pid, SIGKILL);
			waitpid(servers[i].pid, NULL, 0);
			servers[i].pid = 0;
		}
	}
}

static void remember(pid_t pid)
{
	if (!hook_set) {
		atexit(kill_all);
		hook_set = true;
	}
	for (int i = 0; i < MAX_SERVERS; i++) {
		if (servers[i].pid == 0) {
			servers[i].pid = pid;
			servers[i].owner = getpid();
			return;
		}
	}
}

static void forget(pid_t pid)
{
	for (int i = 0; i < MAX_SERVERS; i++)
		if (servers[i].pid == pid)
			servers[i].pid = 0;
}

const char *dp_s3rver_script(void)
{
	static char path[PATH_MAX];
	const char *env = getenv("DP_S3RVER_JS");
	if (env && *env)
		return access(env, R_OK) == 0 ? env : NULL;
	char dir[PATH_MAX];
	if (!getcwd(dir, sizeof(dir)))
		return NULL;
	for (;;) {
		snprintf(path, sizeof(path), "%s/tests/node_modules/s3rver/bin/s3rver.js", dir);
		if (access(path, R_OK) == 0)
			return path;
		char *slash = strrchr(dir, '/');
		if (!slash || slash == dir)
			return NULL;
		*slash = 0;
	}
}

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_in a = {.sin_family = AF_INET};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof(a);
	int port = -1;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static bool port_open(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return false;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

void dp_s3rver_env(void)
{
	setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);
	unsetenv("AWS_SESSION_TOKEN");
	unsetenv("AWS_PROFILE");
	unsetenv("AWS_SHARED_CREDENTIALS_FILE");
	unsetenv("AWS_CONFIG_FILE");
}

static int start(dp_s3rver *s, const char *dir, int port, const char *bucket, const char *key,
                 const char *cert)
{
	memset(s, 0, sizeof(*s));
	const char *js = dp_s3rver_script();
	if (!js) {
		fprintf(stderr, "s3rver: tests/node_modules/s3rver is missing: run "
		                "'bash scripts/install-deps.sh test' (npm install in tests/)\n");
		return -1;
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "s3rver: cannot create %s: %s\n", dir, strerror(errno));
		return -1;
	}
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	snprintf(s->log, sizeof(s->log), "%s.log", dir);
	for (int tries = 0; tries < 5; tries++) {
		s->port = port > 0 ? port : free_port();
		if (s->port <= 0) {
			fprintf(stderr, "s3rver: no free port\n");
			return -1;
		}
		snprintf(s->endpoint, sizeof(s->endpoint), "%s://127.0.0.1:%d",
		         cert ? "https" : "http", s->port);
		char portstr[16];
		snprintf(portstr, sizeof(portstr), "%d", s->port);
		pid_t parent = getpid();
		pid_t pid = fork();
		if (pid < 0) {
			fprintf(stderr, "s3rver: fork: %s\n", strerror(errno));
			return -1;
		}
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(127);
			int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
			if (fd >= 0) {
				dup2(fd, 1);
				dup2(fd, 2);
				close(fd);
			}
			int devnull = open("/dev/null", O_RDONLY);
			if (devnull >= 0)
				dup2(devnull, 0);
			const char *argv[16];
			int n = 0;
			argv[n++] = "node";
			/* s3rver makes continuation tokens with DES, which
			 * OpenSSL 3 keeps in its legacy provider. */
			argv[n++] = "--openssl-legacy-provider";
			argv[n++] = js;
			argv[n++] = "-d";
			argv[n++] = dir;
			argv[n++] = "-a";
			argv[n++] = "127.0.0.1";
			argv[n++] = "-p";
			argv[n++] = portstr;
			argv[n++] = "--service-endpoint";
			argv[n++] = "localhost";
			if (key && cert) {
				argv[n++] = "--key";
				argv[n++] = key;
				argv[n++] = "--cert";
				argv[n++] = cert;
			}
			if (bucket) {
				argv[n++] = "--configure-bucket";
				argv[n++] = bucket;
			}
			argv[n] = NULL;
			execvp("node", (char *const *)argv);
			fprintf(stderr, "s3rver: cannot run node: %s\n", strerror(errno));
			_exit(127);
		}
		s->pid = pid;
		remember(pid);
		/* Node takes a few hundred ms to start. */
		for (int i = 0; i < 300; i++) {
			int st;
			if (waitpid(pid, &st, WNOHANG) == pid) {
				forget(pid);
				s->pid = 0;
				break;
			}
			if (port_open(s->port))
				return 0;
			struct timespec ts = {0, 50 * 1000000L};
			nanosleep(&ts, NULL);
		}
		if (s->pid) {
			dp_s3rver_stop(s, true);
			fprintf(stderr, "s3rver: did not listen on port %d within 15 s (log: %s)\n",
			        s->port, s->log);
			return -1;
		}
		if (port > 0)
			break; /* a fixed port: do not try another */
	}
	fprintf(stderr, "s3rver: exited at start (log: %s)\n", s->log);
	return -1;
}

int dp_s3rver_start(dp_s3rver *s, const char *dir, int port, const char *bucket)
{
	return start(s, dir, port, bucket, NULL, NULL);
}

int dp_s3rver_start_tls(dp_s3rver *s, const char *dir, int port, const char *bucket,
                        const char *key_pem, const char *cert_pem)
{
	return start(s, dir, port, bucket, key_pem, cert_pem);
}

void dp_s3rver_stop(dp_s3rver *s, bool hard)
{
	if (s->pid <= 0)
		return;
	kill(s->pid, hard ? SIGKILL : SIGTERM);
	int st;
	for (int i = 0; i < 100; i++) {
		if (waitpid(s->pid, &st, WNOHANG) == s->pid)
			goto done;
		struct timespec ts = {0, 50 * 1000000L};
		nanosleep(&ts, NULL);
	}
	kill(s->pid, SIGKILL);
	waitpid(s->pid, &st, 0);
done:
	forget(s->pid);
	s->pid = 0;
}

/* ---- repair after a kill -9 ---- */

static const char obj_suffix[] = "._S3rver_object";
static int repaired;
static int repair_err;

static bool read_small(const char *path, char *buf, size_t n, size_t *len)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return false;
	ssize_t r = read(fd, buf, n - 1);
	close(fd);
	if (r < 0)
		return false;
	buf[r] = 0;
	*len = (size_t)r;
	return true;
}

static bool md5_file(const char *path, char hex[33])
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return false;
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	EVP_DigestInit_ex(c, EVP_md5(), NULL);
	char buf[65536];
	ssize_t r;
	while ((r = read(fd, buf, sizeof(buf))) > 0)
		EVP_DigestUpdate(c, buf, (size_t)r);
	close(fd);
	unsigned char d[16];
	unsigned int dl = 0;
	EVP_DigestFinal_ex(c, d, &dl);
	EVP_MD_CTX_free(c);
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
	return r == 0;
}

static int repair_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)f;
	size_t pl = strlen(path), sl = sizeof(obj_suffix) - 1;
	if (flag != FTW_F || pl <= sl || strcmp(path + pl - sl, obj_suffix) != 0)
		return 0;
	char base[PATH_MAX], meta[PATH_MAX + 32], md5p[PATH_MAX + 8];
	snprintf(base, sizeof(base), "%.*s", (int)(pl - sl), path);
	snprintf(meta, sizeof(meta), "%s._S3rver_metadata.json", base);
	snprintf(md5p, sizeof(md5p), "%s.md5", path);
	char buf[8192], want[64], got[33];
	size_t len = 0, wl = 0;
	bool ok = read_small(meta, buf, sizeof(buf), &len);
	while (ok && len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
		len--;
	ok = ok && len > 0 && buf[0] == '{' && buf[len - 1] == '}';
	ok = ok && read_small(md5p, want, sizeof(want), &wl) && wl == 32;
	ok = ok && md5_file(path, got) && memcmp(want, got, 32) == 0;
	if (ok)
		return 0;
	if ((unlink(path) < 0 && errno != ENOENT) || (unlink(meta) < 0 && errno != ENOENT) ||
	    (unlink(md5p) < 0 && errno != ENOENT))
		repair_err = 1;
	repaired++;
	return 0;
}

int dp_s3rver_repair(const char *dir)
{
	repaired = 0;
	repair_err = 0;
	if (nftw(dir, repair_one, 32, FTW_PHYS) != 0 || repair_err)
		return -1;
	return repaired;
}

/* ---- a self-signed certificate ---- */

static int add_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!e)
		return -1;
	int ok = X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	return ok ? 0 : -1;
}

int dp_s3rver_make_cert(const char *key_pem, const char *cert_pem)
{
	int rc = -1;
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	FILE *f = NULL;
	if (!k || !x)
		goto out;
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), (long)time(NULL));
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, k);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"127.0.0.1", -1,
	                           -1, 0);
	X509_set_issuer_name(x, name);
	if (add_ext(x, NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost") < 0 ||
	    add_ext(x, NID_basic_constraints, "critical,CA:TRUE") < 0 ||
	    add_ext(x, NID_key_usage, "critical,digitalSignature,keyCertSign") < 0)
		goto out;
	if (!X509_sign(x, k, EVP_sha256()))
		goto out;
	f = fopen(key_pem, "w");
	if (!f || !PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL))
		goto out;
	fclose(f);
	f = fopen(cert_pem, "w");
	if (!f || !PEM_write_X509(f, x))
		goto out;
	rc = 0;
out:
	if (f)
		fclose(f);
	X509_free(x);
	EVP_PKEY_free(k);
	return rc;
}

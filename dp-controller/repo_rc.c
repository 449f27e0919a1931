/*
 * BackupRepo reconciler: PreChecking -> Ready | Failed.
 *
 * The pre-check writes a small random object under precheck/, reads it
 * back, compares and removes it (the permission and "directory missing"
 * problems users hit show up here, not in the first backup), then opens the
 * repository with its passphrase, creating it (dp_repo_init) when there is
 * none. The passphrase comes from spec.encryption.passphraseFrom and is
 * wiped after use. A Ready repo is checked again when its spec changes
 * (generation), a Failed one every minute.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_int.h"
#include "dp/backend.h"
#include "dp/crypto.h"
#include "dp/error.h"
#include "dp/log.h"

#define RECHECK_FAILED_S 60

static int probe(const char *url, const dp_backend_opts *o)
{
	dp_backend *b = NULL;
	dp_buf got = {0};
	uint8_t data[64], rnd[8];
	char key[64];
	int rc = dp_backend_open(&b, url, o);
	if (rc)
		return rc;
	if (b->create && (rc = b->create(b)))
		goto out;
	if ((rc = dp_random(rnd, sizeof(rnd))) || (rc = dp_random(data, sizeof(data))))
		goto out;
	snprintf(key, sizeof(key), "precheck/%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1],
	         rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
	if ((rc = b->put(b, key, data, sizeof(data)))) {
		dp_error_prefix("write probe \"%s\"", key);
		goto out;
	}
	if ((rc = b->get(b, key, 0, UINT64_MAX, &got))) {
		dp_error_prefix("read probe \"%s\"", key);
		goto out;
	}
	if (got.len != sizeof(data) || memcmp(got.data, data, sizeof(data)) != 0) {
		rc = dp_error_set(DP_ECORRUPT, "read probe \"%s\": got different bytes back", key);
		goto out;
	}
	if ((rc = b->remove(b, key)))
		dp_error_prefix("delete probe \"%s\"", key);
out:
	dp_buf_free(&got);
	dp_backend_free(b);
	return rc;
}

static int precheck(const cJSON *spec, const char *name, char *id_out)
{
	char url[4096], what[300];
	dp_buf pass = {0};
	dp_repo *r = NULL;
	dp_backend_opts o = {0};
	o.retries = -1;
	const cJSON *s3 = cJSON_GetObjectItemCaseSensitive(spec, "s3");
	if (s3) {
		o.s3_endpoint = js(s3, "endpoint");
		o.s3_region = js(s3, "region");
		o.s3_uri_style = js(s3, "uriStyle");
	}
	int rc = ctl_repo_url(spec, url, sizeof(url));
	if (rc || (rc = probe(url, &o)))
		goto out;
	snprintf(what, sizeof(what), "spec.encryption.passphraseFrom");
	if ((rc = ctl_secret_read(
	         cJSON_GetObjectItemCaseSensitive(
	             cJSON_GetObjectItemCaseSensitive(spec, "encryption"), "passphraseFrom"),
	         what, &pass)) ||
	    (rc = dp_buf_append(&pass, "", 1)))
		goto out;
	rc = dp_repo_open(&r, url, &o, (const char *)pass.data);
	if (rc == DP_ENOTFOUND) {
		dp_error_clear();
		dp_repo_init_opts io = {0};
		const cJSON *comp = cJSON_GetObjectItemCaseSensitive(spec, "compression");
		io.zstd_level = (int)jnum(comp, "level", 0);
		char id[DP_ID_HEX];
		if ((rc = dp_repo_init(url, &o, &io, (const char *)pass.data, id)))
			goto out;
		dp_info("backuprepo \"%s\": created repository %.16s at %s", name, id, url);
		rc = dp_repo_open(&r, url, &o, (const char *)pass.data);
	}
	if (rc == 0)
		snprintf(id_out, DP_ID_HEX, "%s", dp_repo_id(r));
out:
	dp_repo_free(r);
	dp_buf_wipe(&pass);
	return rc;
}

int ctl_repo_reconcile(dp_ctl *c, const char *name, bool *final)
{
	ctl_res x;
	int rc = ctl_load(c, DP_KIND_BACKUP_REPO, name, &x);
	if (rc)
		return rc == DP_ENOTFOUND ? (dp_error_clear(), *final = true, 0) : rc;
	const char *ph = js(x.status, "phase");
	int64_t now = dp_ctl_now(c);
	bool same_gen = jnum(x.status, "observedGeneration", -1) == x.r.generation;
	if (ph && same_gen &&
	    (strcmp(ph, "Ready") == 0 ||
	     (strcmp(ph, "Failed") == 0 &&
	      now - jtime(x.status, "lastCheckTime") < RECHECK_FAILED_S))) {
		*final = true;
		goto out;
	}
	if (!ph || strcmp(ph, "PreChecking") != 0) {
		jset_str(x.status, "phase", "PreChecking");
		if ((rc = ctl_save(c, &x)))
			goto out;
	}
	char id[DP_ID_HEX] = "";
	int prc = precheck(x.spec, name, id);
	jset_time(x.status, "lastCheckTime", now);
	jset_num(x.status, "observedGeneration", (double)x.r.generation);
	char url[4096];
	if (ctl_repo_url(x.spec, url, sizeof(url)) == 0)
		jset_str(x.status, "url", url);
	if (prc == 0) {
		jset_str(x.status, "phase", "Ready");
		jset_str(x.status, "repositoryId", id);
		jset_str(x.status, "failureReason", NULL);
		dp_catalog_event(c->cat, DP_KIND_BACKUP_REPO, name, "Normal", "PreCheckPassed",
		                 "write/read/delete probe passed; repository %.16s", id);
	} else {
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s%s", dp_error_last(),
		         prc == DP_EAUTH ? " (check spec.encryption.passphraseFrom)" : "");
		dp_error_clear();
		jset_str(x.status, "phase", "Failed");
		jset_str(x.status, "failureReason", msg);
		dp_catalog_event(c->cat, DP_KIND_BACKUP_REPO, name, "Warning", "PreCheckFailed",
		                 "%s", msg);
	}
	rc = ctl_save(c, &x);
	*final = true;
out:
	ctl_res_free(&x);
	return rc;
}

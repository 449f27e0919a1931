/*
 * Opening the repository a dp-worker command names (see worker.h). The
 * passphrase lives only for the duration of dp_repo_open and is wiped.
 */
#include "worker.h"

#include "dp/error.h"

int dp_worker_open_repo(dp_repo **out, const dp_cli *c)
{
	*out = NULL;
	char *pass = NULL;
	int rc = dp_cli_need_repo(c);
	if (rc)
		return rc;
	rc = dp_cli_passphrase(&pass, c);
	if (rc)
		return rc;
	rc = dp_repo_open(out, c->repo, &c->bopts, pass);
	dp_cli_passphrase_free(pass);
	if (rc)
		return rc;
	if (c->threads > 0)
		dp_repo_set_threads(*out, c->threads);
	return 0;
}

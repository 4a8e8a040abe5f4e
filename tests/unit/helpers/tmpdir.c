/* tmpdir.c: temporary directories for tests that touch real files. */
#include "tmpdir.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void h_tmpdir_make(char *buf, size_t len, const char *prefix)
{
	const char *tmp = getenv("TMPDIR");
	int n = snprintf(buf, len, "%s/%s-XXXXXX", tmp != NULL ? tmp : "/tmp", prefix);
	if (n < 0 || (size_t)n >= len || mkdtemp(buf) == NULL) {
		fprintf(stderr, "h_tmpdir_make: cannot make a directory for %s\n", prefix);
		abort();
	}
}

void h_tmpdir_remove(const char *path)
{
	DIR *d = opendir(path);
	if (d == NULL) {
		return;
	}
	struct dirent *de;
	char p[4096];
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
			continue;
		}
		snprintf(p, sizeof p, "%s/%s", path, de->d_name);
		if (unlink(p) != 0) {
			h_tmpdir_remove(p);
		}
	}
	closedir(d);
	rmdir(path);
}

/* tmpdir.h: temporary directories for tests that touch real files. */
#ifndef CAIRN_TEST_TMPDIR_H
#define CAIRN_TEST_TMPDIR_H

#include <stddef.h>

/* Make a fresh directory named <TMPDIR or /tmp>/<prefix>-XXXXXX into buf;
 * aborts the test run if it cannot. */
void h_tmpdir_make(char *buf, size_t len, const char *prefix);
/* Remove a directory and everything below it (best effort). */
void h_tmpdir_remove(const char *path);

#endif

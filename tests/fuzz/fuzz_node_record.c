/* fuzz_node_record.c: arbitrary bytes as the value of a /cairn/members/<name> key, read by
 * libcairn's cairn_node_parse (client/cairn.h). Any writer can put anything under that prefix,
 * so the parser must refuse what is not a member record without reading outside the value. A
 * record it accepts must name a known state, and every string it returns must lie inside the
 * scratch buffer it was given. The value is copied to an exactly-sized heap block first, so
 * ASan catches a read one byte past its end. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cairn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void inside(const char *s, const char *scratch, size_t cap)
{
	assert(s != NULL);
	assert(s >= scratch && s + strlen(s) < scratch + cap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *value = malloc(size > 0 ? size : 1);
	if (value == NULL)
		return 0;
	memcpy(value, data, size);
	struct cairn_node node;
	struct cairn_tag tags[8];
	size_t cap = size + 1 < 512 ? size + 1 : 512; /* sometimes too small on purpose */
	char *scratch = malloc(cap);
	if (scratch != NULL &&
	    cairn_node_parse(value, size, &node, tags, sizeof tags / sizeof tags[0], scratch, cap) ==
		    0) {
		assert(node.state >= CAIRN_NODE_ALIVE && node.state <= CAIRN_NODE_LEFT);
		inside(node.name, scratch, cap);
		inside(node.address, scratch, cap);
		inside(node.since, scratch, cap);
		assert(node.n_tags <= sizeof tags / sizeof tags[0]);
		for (size_t i = 0; i < node.n_tags; i++) {
			inside(node.tags[i].name, scratch, cap);
			inside(node.tags[i].value, scratch, cap);
		}
	}
	free(scratch);
	free(value);
	return 0;
}

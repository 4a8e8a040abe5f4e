/* crc32c.h: CRC-32C (Castagnoli), the checksum of WAL records (kvstore/) and
 * peer frames (net/). Pure function, libc only, safe from any thread. */
#ifndef CAIRN_CRC32C_H
#define CAIRN_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32C of buf, continuing from crc (0 to start): crc32c(crc32c(0, a), b)
 * is the CRC of a followed by b. */
uint32_t cairn_crc32c(uint32_t crc, const void *buf, size_t len);

/* The same function computed with the tables only, whatever the CPU offers:
 * for tests, which check that both paths agree. */
uint32_t cairn__crc32c_sw(uint32_t crc, const void *buf, size_t len);

#endif /* CAIRN_CRC32C_H */

/* snapshot.h: `cairn snapshot status|restore` (snapshot.c). argv starts after "snapshot";
 * returns the process's exit status: 0, 1 for a failure, 2 for a usage mistake. */
#ifndef CAIRN_CMD_SNAPSHOT_H
#define CAIRN_CMD_SNAPSHOT_H

int cairn_snapshot_main(int argc, char **argv);

#endif /* CAIRN_CMD_SNAPSHOT_H */

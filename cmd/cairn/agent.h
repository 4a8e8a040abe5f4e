/* agent.h: `cairn agent`, a gossip-only member for node agents, and `cairn gossip-keygen`
 * (agent.c). argv starts after the subcommand's name; each returns the process's exit status:
 * 0, 1 for a failure, 2 for a usage mistake. */
#ifndef CAIRN_CMD_AGENT_H
#define CAIRN_CMD_AGENT_H

int cairn_agent_main(int argc, char **argv);
int cairn_gossip_keygen_main(int argc, char **argv);

#endif /* CAIRN_CMD_AGENT_H */

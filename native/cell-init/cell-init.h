/* cell-init.h: what the job path (cell-init.c), the sandbox supervisor (supervisor.c) and its file operations
   (file-ops.c) share. Every buffer they use has a fixed bound; see each constant. */
#ifndef CELL_INIT_H
#define CELL_INIT_H
#include <stdint.h>
#include <sys/types.h>

#define MAX_ASSIGNMENT (1u << 20) /* src/shared/wire.ts MAX_ASSIGNMENT_BYTES */
#define MAX_FILE (64u * 1024)      /* src/shared/wire.ts MAX_CELL_FILE_BYTES */
#define IO_CHUNK (64u * 1024)      /* the most one output, stdin or file-data frame carries (agent: INIT_CHUNK_BYTES) */
#define MAX_PROCS 64               /* src/shared/wire.ts MAX_PROCS_PER_SANDBOX */
#define MAX_OPS 16                 /* src/shared/wire.ts MAX_FILE_OPS_PER_SANDBOX */
#define MAX_LIST 2048              /* src/shared/wire.ts MAX_LIST_ENTRIES */

/* The workload's uid and gid (argv[1], argv[2]; default 1000, src/agent/runtime/spec.ts WORKLOAD_UID). */
extern uid_t workload_uid;
extern gid_t workload_gid;

void send_frame(char type, const void *data, uint32_t len);
void send_frame2(char type, const void *head, uint32_t hlen, const void *data, uint32_t len);
void fail(const char *what) __attribute__((noreturn));
char *read_message(char magic[4], uint32_t *len, uint32_t max);
void place_file(const char *payload, uint32_t len);
int enter_dir(const char *dir);
void exec_workload(char **argv, char **envp);
void set_catchable_signals(void (*disposition)(int));
int become_workload(void);
int become_workload_nocaps(void);

/* supervisor.c: serve a sandbox until the agent closes fd 0; never returns. */
void supervise(void) __attribute__((noreturn));
/* file-ops.c: run one file operation in a forked child already holding the workload's identity; returns an errno. */
int run_file_op(uint32_t op, uint32_t flags, uint32_t mode, const char *path, const char *to, int sock);

#endif

/* flintvm agent: shared declarations of main.c, conn.c and spawn.c. */
#ifndef FLINTVM_AGENT_H
#define FLINTVM_AGENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MAX_CONNS 16
#define MAX_PROCS 256
/* Output (STDOUT/STDERR) is read from a process only while its connection has less than this queued. */
#define OUT_HIGH_WATER (1u << 20)
/* A connection stops reading STDIN frames for a process whose pending stdin is over this. */
#define STDIN_HIGH_WATER (4u << 20)
/* What one exited process's pipes may still give after its exit (grandchildren may hold them open). */
#define DRAIN_LIMIT (4u << 20)

/* A growable byte buffer; [off, len) is pending. */
struct buf {
	uint8_t *data;
	size_t off, len, cap;
};

struct conn {
	int fd;                  /* -1: slot free */
	uint8_t *in;             /* FRAME_HEADER_SIZE + FRAME_MAX_BODY bytes */
	size_t in_len;
	struct buf out;
	int closing;             /* flush `out`, then close */
	uint32_t stalled_on;     /* a process id whose stdin is full, or 0 */
};

struct proc {
	int used;
	int conn;                /* index into conns, or -1 once its connection closed */
	uint32_t id;
	pid_t pid;
	int in_fd, out_fd, err_fd; /* our ends; -1 when closed. A terminal: in_fd is a dup of the master, out_fd the master. */
	int terminal;
	struct buf stdin_buf;
	int stdin_close_pending;
};

extern struct conn conns[MAX_CONNS];
extern struct proc procs[MAX_PROCS];

void agent_log(const char *fmt, ...);
int buf_reserve(struct buf *b, size_t more);
void buf_consume(struct buf *b, size_t n);
void buf_free(struct buf *b);
size_t buf_pending(const struct buf *b);

/* Queue a frame for connection c (dropped when c is closing or gone). */
void send_frame(int c, uint8_t type, uint32_t id, const void *body, size_t len);
void send_error(int c, uint32_t id, uint32_t code, int err, const char *fmt, ...);

/* spawn.c: parse a START body and start the process; sends STARTED or ERROR. */
void handle_start(int c, uint32_t id, const uint8_t *body, size_t len);
struct proc *find_proc(int c, uint32_t id);
void proc_close_fds(struct proc *p);
void set_nonblock(int fd);

#endif

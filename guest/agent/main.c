/*
 * flintvm-agent: the in-guest half of docs/agent-protocol.md.
 *
 * As PID 1 of its initramfs it mounts /proc, /sys, /dev and /dev/pts, puts
 * the console on fds 0-2, listens on AF_VSOCK port 1024 and serves the
 * host's connections in one poll(2) loop: START forks a process, its stdout
 * and stderr come back as frames, its exit as EXIT once its output is read.
 * Every child the kernel hands to init is reaped. Nothing the host sends
 * makes the agent exit: a bad frame gets an ERROR, a frame too long to skip
 * ends that connection.
 *
 * `flintvm-agent --unix PATH` listens on a Unix socket instead (tests on a
 * machine without vsock); `--port N` picks another vsock port.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "agent.h"
#include "protocol.h"

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#define VMADDR_CID_ANY 0xffffffffu

/* struct sockaddr_vm of <linux/vm_sockets.h>, which musl's headers lack. */
struct sockaddr_vm {
	sa_family_t svm_family;
	unsigned short svm_reserved1;
	unsigned int svm_port;
	unsigned int svm_cid;
	unsigned char svm_zero[sizeof(struct sockaddr) - sizeof(sa_family_t) - sizeof(unsigned short) - 2 * sizeof(unsigned int)];
};

static const char AGENT_NAME[] = "flintvm-agent 1";

struct conn conns[MAX_CONNS];
struct proc procs[MAX_PROCS];

void agent_log(const char *fmt, ...)
{
	char line[512];
	int n = snprintf(line, sizeof line, "flintvm-agent: ");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = strlen(line);
	line[len++] = '\n';
	ssize_t r = write(2, line, len);
	(void)r;
}

void set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* ------------------------------------------------------------------ buffers */

int buf_reserve(struct buf *b, size_t more)
{
	if (b->cap - b->off - b->len >= more) return 0;
	if (b->off) {
		memmove(b->data, b->data + b->off, b->len);
		b->off = 0;
		if (b->cap - b->len >= more) return 0;
	}
	size_t cap = b->cap ? b->cap : 65536;
	while (cap - b->len < more) cap *= 2;
	uint8_t *d = realloc(b->data, cap);
	if (!d) return -1;
	b->data = d;
	b->cap = cap;
	return 0;
}

void buf_consume(struct buf *b, size_t n)
{
	b->off += n;
	b->len -= n;
	if (b->len == 0) b->off = 0;
}

void buf_free(struct buf *b)
{
	free(b->data);
	memset(b, 0, sizeof *b);
}

size_t buf_pending(const struct buf *b) { return b->len; }

static void wr32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

static void conn_close(int c);

/* Room for a frame of `len` body bytes at the end of c's queue; NULL (and the connection closed) when memory runs out. */
static uint8_t *frame_slot(int c, uint8_t type, uint32_t id, size_t len)
{
	struct conn *k = &conns[c];
	if (buf_reserve(&k->out, FRAME_HEADER_SIZE + len) < 0) {
		agent_log("connection %d: out of memory, closing it", c);
		conn_close(c);
		return NULL;
	}
	uint8_t *h = k->out.data + k->out.off + k->out.len;
	wr32(h, (uint32_t)len);
	h[4] = type;
	wr32(h + 5, id);
	return h + FRAME_HEADER_SIZE;
}

void send_frame(int c, uint8_t type, uint32_t id, const void *body, size_t len)
{
	if (c < 0 || conns[c].fd < 0 || conns[c].closing) return;
	uint8_t *b = frame_slot(c, type, id, len);
	if (!b) return;
	if (len) memcpy(b, body, len);
	conns[c].out.len += FRAME_HEADER_SIZE + len;
}

void send_error(int c, uint32_t id, uint32_t code, int err, const char *fmt, ...)
{
	uint8_t body[8 + 512];
	wr32(body, code);
	wr32(body + 4, (uint32_t)err);
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf((char *)body + 8, 512, fmt, ap);
	va_end(ap);
	if (n < 0) n = 0;
	if (n > 511) n = 511;
	send_frame(c, MSG_ERROR, id, body, 8 + (size_t)n);
}

/* ------------------------------------------------------------------ processes */

struct proc *find_proc(int c, uint32_t id)
{
	for (size_t i = 0; i < MAX_PROCS; i++)
		if (procs[i].used && procs[i].conn == c && procs[i].id == id) return &procs[i];
	return NULL;
}

void proc_close_fds(struct proc *p)
{
	if (p->in_fd >= 0) close(p->in_fd);
	if (p->out_fd >= 0) close(p->out_fd);
	if (p->err_fd >= 0) close(p->err_fd);
	p->in_fd = p->out_fd = p->err_fd = -1;
	buf_free(&p->stdin_buf);
}

/* Reads what one of p's output fds has (at most one frame); returns the bytes read, 0 at EOF (fd closed), -1 when none now. */
static ssize_t read_output(struct proc *p, int *fd, uint8_t type)
{
	struct conn *k = &conns[p->conn];
	if (buf_reserve(&k->out, FRAME_HEADER_SIZE + FRAME_MAX_OUTPUT) < 0) {
		agent_log("connection %d: out of memory, closing it", p->conn);
		conn_close(p->conn);
		return 0;
	}
	uint8_t *h = k->out.data + k->out.off + k->out.len;
	ssize_t n;
	do n = read(*fd, h + FRAME_HEADER_SIZE, FRAME_MAX_OUTPUT); while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN) return -1;
	if (n <= 0) { /* EOF, or EIO from a terminal whose other end is closed */
		close(*fd);
		*fd = -1;
		return 0;
	}
	wr32(h, (uint32_t)n);
	h[4] = type;
	wr32(h + 5, p->id);
	k->out.len += FRAME_HEADER_SIZE + (size_t)n;
	return n;
}

/* Writes p's pending stdin; on EPIPE (the process closed its stdin) the rest is dropped. */
static void flush_stdin(struct proc *p)
{
	while (p->in_fd >= 0 && buf_pending(&p->stdin_buf)) {
		ssize_t n = write(p->in_fd, p->stdin_buf.data + p->stdin_buf.off, p->stdin_buf.len);
		if (n < 0 && errno == EINTR) continue;
		if (n < 0 && errno == EAGAIN) return;
		if (n < 0) { close(p->in_fd); p->in_fd = -1; buf_free(&p->stdin_buf); break; }
		buf_consume(&p->stdin_buf, (size_t)n);
	}
	if (p->stdin_close_pending && !buf_pending(&p->stdin_buf) && p->in_fd >= 0) {
		close(p->in_fd);
		p->in_fd = -1;
	}
}

/* p exited with wait status st: send what its pipes still hold, then EXIT, and free it. */
static void proc_exited(struct proc *p, int st)
{
	if (p->conn >= 0) {
		size_t drained = 0;
		ssize_t n;
		while (p->out_fd >= 0 && drained < DRAIN_LIMIT && p->conn >= 0 && (n = read_output(p, &p->out_fd, MSG_STDOUT)) > 0) drained += (size_t)n;
		drained = 0;
		while (p->err_fd >= 0 && drained < DRAIN_LIMIT && p->conn >= 0 && (n = read_output(p, &p->err_fd, MSG_STDERR)) > 0) drained += (size_t)n;
		uint8_t body[5];
		body[0] = WIFSIGNALED(st) ? EXIT_KIND_SIGNAL : EXIT_KIND_CODE;
		wr32(body + 1, (uint32_t)(WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st)));
		send_frame(p->conn, MSG_EXIT, p->id, body, sizeof body);
		if (p->conn >= 0 && conns[p->conn].stalled_on == p->id) conns[p->conn].stalled_on = 0;
	}
	proc_close_fds(p);
	p->used = 0;
}

static void reap(void)
{
	int st;
	pid_t pid;
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		for (size_t i = 0; i < MAX_PROCS; i++)
			if (procs[i].used && procs[i].pid == pid) { proc_exited(&procs[i], st); break; }
	}
}

/* ------------------------------------------------------------------ connections */

static void conn_close(int c)
{
	struct conn *k = &conns[c];
	if (k->fd < 0) return;
	for (size_t i = 0; i < MAX_PROCS; i++) {
		struct proc *p = &procs[i];
		if (!p->used || p->conn != c) continue;
		/* Nobody is left to read its output: end its session, reap it later. */
		kill(-p->pid, SIGKILL);
		kill(p->pid, SIGKILL);
		proc_close_fds(p);
		p->conn = -1;
	}
	close(k->fd);
	k->fd = -1;
	buf_free(&k->out);
	k->in_len = 0;
	k->closing = 0;
	k->stalled_on = 0;
}

static void handle_frame(int c, uint8_t type, uint32_t id, const uint8_t *body, uint32_t len)
{
	struct proc *p = NULL;
	if (type != MSG_START) {
		p = find_proc(c, id);
		if (!p && (type == MSG_STDIN || type == MSG_STDIN_CLOSE || type == MSG_RESIZE || type == MSG_SIGNAL)) {
			send_error(c, id, ERR_NO_SUCH_PROCESS, 0, "no process %u on this connection", id);
			return;
		}
	}
	switch (type) {
	case MSG_START:
		handle_start(c, id, body, len);
		return;
	case MSG_STDIN:
		if (p->in_fd < 0 || p->stdin_close_pending) return; /* its stdin is closed: the data is dropped */
		if (buf_reserve(&p->stdin_buf, len) < 0) { send_error(c, id, ERR_LIMIT, ENOMEM, "stdin: out of memory"); return; }
		memcpy(p->stdin_buf.data + p->stdin_buf.off + p->stdin_buf.len, body, len);
		p->stdin_buf.len += len;
		flush_stdin(p);
		return;
	case MSG_STDIN_CLOSE:
		if (len != 0) break;
		p->stdin_close_pending = 1;
		flush_stdin(p);
		return;
	case MSG_RESIZE: {
		if (len != 4) break;
		if (!p->terminal || p->out_fd < 0) { send_error(c, id, ERR_NOT_TERMINAL, 0, "process %u has no terminal", id); return; }
		struct winsize ws = { .ws_row = (unsigned short)(body[0] | body[1] << 8), .ws_col = (unsigned short)(body[2] | body[3] << 8) };
		if (ioctl(p->out_fd, TIOCSWINSZ, &ws) < 0) send_error(c, id, ERR_NOT_TERMINAL, errno, "TIOCSWINSZ: %s", strerror(errno));
		return;
	}
	case MSG_SIGNAL: {
		if (len != 4) break;
		uint32_t sig = rd32(body);
		if (sig == 0 || sig >= _NSIG) { send_error(c, id, ERR_BAD_FRAME, EINVAL, "signal %u is not one of 1..%d", sig, _NSIG - 1); return; }
		if (kill(p->pid, (int)sig) < 0) send_error(c, id, ERR_SIGNAL_FAILED, errno, "kill %d: %s", (int)p->pid, strerror(errno));
		return;
	}
	default:
		send_error(c, id, ERR_BAD_FRAME, 0, "unknown message type 0x%02x", type);
		return;
	}
	send_error(c, id, ERR_BAD_FRAME, 0, "message type 0x%02x: body of %u bytes is the wrong length", type, len);
}

/* Handles every complete frame c has read, unless it waits for a process's stdin to drain. */
static void conn_parse(int c)
{
	struct conn *k = &conns[c];
	size_t pos = 0;
	while (k->fd >= 0 && !k->closing && k->in_len - pos >= FRAME_HEADER_SIZE) {
		const uint8_t *h = k->in + pos;
		uint32_t len = rd32(h);
		uint8_t type = h[4];
		uint32_t id = rd32(h + 5);
		if (len > FRAME_MAX_BODY) {
			send_error(c, id, ERR_FRAME_TOO_LONG, 0, "frame body of %u bytes, at most %u: closing the connection", len, FRAME_MAX_BODY);
			k->closing = 1;
			k->in_len = 0;
			return;
		}
		if (k->in_len - pos < FRAME_HEADER_SIZE + len) break;
		if (type == MSG_STDIN) {
			struct proc *p = find_proc(c, id);
			if (p && buf_pending(&p->stdin_buf) >= STDIN_HIGH_WATER) { k->stalled_on = id; break; }
		}
		k->stalled_on = 0;
		handle_frame(c, type, id, h + FRAME_HEADER_SIZE, len);
		pos += FRAME_HEADER_SIZE + len;
	}
	if (k->fd >= 0 && pos) {
		memmove(k->in, k->in + pos, k->in_len - pos);
		k->in_len -= pos;
	}
}

static void conn_accept(int lfd)
{
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0) return;
	int c = -1;
	for (int i = 0; i < MAX_CONNS && c < 0; i++)
		if (conns[i].fd < 0) c = i;
	if (c < 0) { close(fd); return; }
	if (!conns[c].in) conns[c].in = malloc(FRAME_HEADER_SIZE + FRAME_MAX_BODY);
	if (!conns[c].in) { close(fd); return; }
	conns[c].fd = fd;
	conns[c].in_len = 0;
	uint8_t hello[4 + sizeof AGENT_NAME - 1];
	wr32(hello, AGENT_PROTOCOL_VERSION);
	memcpy(hello + 4, AGENT_NAME, sizeof AGENT_NAME - 1);
	send_frame(c, MSG_HELLO, 0, hello, sizeof hello);
}

static void conn_read(int c)
{
	struct conn *k = &conns[c];
	ssize_t n;
	do n = read(k->fd, k->in + k->in_len, FRAME_HEADER_SIZE + FRAME_MAX_BODY - k->in_len); while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN) return;
	if (n <= 0) { conn_close(c); return; }
	k->in_len += (size_t)n;
}

static void conn_write(int c)
{
	struct conn *k = &conns[c];
	while (buf_pending(&k->out)) {
		ssize_t n = write(k->fd, k->out.data + k->out.off, k->out.len);
		if (n < 0 && errno == EINTR) continue;
		if (n < 0 && errno == EAGAIN) return;
		if (n < 0) { conn_close(c); return; }
		buf_consume(&k->out, (size_t)n);
	}
	if (k->closing) conn_close(c);
}

/* ------------------------------------------------------------------ init */

/* What PID 1 sets up: the pseudo filesystems and the console on fds 0-2. */
static void init_system(void)
{
	static const struct { const char *src, *dir, *type; unsigned long flags; const char *data; } mounts[] = {
		{ "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL },
		{ "sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL },
		{ "devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755" },
		{ "devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=0620,ptmxmode=0666" },
		{ "tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777" },
	};
	for (size_t i = 0; i < sizeof mounts / sizeof mounts[0]; i++) {
		mkdir(mounts[i].dir, 0755);
		if (mount(mounts[i].src, mounts[i].dir, mounts[i].type, mounts[i].flags, mounts[i].data) < 0 && errno != EBUSY)
			agent_log("mount %s: %s", mounts[i].dir, strerror(errno));
	}
	int fd = open("/dev/console", O_RDWR | O_NOCTTY);
	if (fd >= 0) {
		for (int i = 0; i < 3; i++) if (fd != i) dup2(fd, i);
		if (fd > 2) close(fd);
	}
}

/* Fds 0-2 must be open, so no pipe of a child lands there. */
static void ensure_std_fds(void)
{
	for (int i = 0; i < 3; i++) {
		if (fcntl(i, F_GETFD) >= 0) continue;
		int fd = open("/dev/null", O_RDWR);
		if (fd >= 0 && fd != i) { dup2(fd, i); close(fd); }
	}
}

static int listen_errno;

static int listen_on(const char *unix_path, unsigned port)
{
	int fd;
	if (unix_path) {
		struct sockaddr_un a = { .sun_family = AF_UNIX };
		if (strlen(unix_path) >= sizeof a.sun_path) { agent_log("--unix %s: path too long", unix_path); return -1; }
		strcpy(a.sun_path, unix_path);
		unlink(unix_path);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 16) < 0) goto fail;
	} else {
		struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_port = port, .svm_cid = VMADDR_CID_ANY };
		fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 16) < 0) goto fail;
	}
	return fd;
fail:
	if (errno == listen_errno) goto out; /* said once; the caller retries each second */
	listen_errno = errno;
	if (unix_path) agent_log("listen on %s: %s", unix_path, strerror(errno));
	else agent_log("listen on vsock port %u: %s", port, strerror(errno));
out:
	if (fd >= 0) close(fd);
	return -1;
}

/* ------------------------------------------------------------------ the loop */

enum kind { K_LISTEN, K_SIGNAL, K_CONN, K_IN, K_OUT, K_ERR };

int main(int argc, char **argv)
{
	const char *unix_path = NULL;
	unsigned port = AGENT_VSOCK_PORT;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--unix") == 0 && i + 1 < argc) unix_path = argv[++i];
		else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) port = (unsigned)strtoul(argv[++i], NULL, 10);
		/* As PID 1, the kernel passes unknown command-line words here: ignore them. */
	}
	if (getpid() == 1) init_system();
	ensure_std_fds();
	signal(SIGPIPE, SIG_IGN);
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);
	int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
	for (int i = 0; i < MAX_CONNS; i++) conns[i].fd = -1;

	int lfd;
	while ((lfd = listen_on(unix_path, port)) < 0) sleep(1);
	if (unix_path) agent_log("listening on %s", unix_path);
	else agent_log("listening on vsock port %u", port);

	static struct pollfd pfds[2 + MAX_CONNS + 3 * MAX_PROCS];
	static struct { enum kind kind; int idx; } what[2 + MAX_CONNS + 3 * MAX_PROCS];
	for (;;) {
		for (int c = 0; c < MAX_CONNS; c++)
			if (conns[c].fd >= 0) conn_parse(c);
		nfds_t n = 0;
		int nconns = 0;
		for (int c = 0; c < MAX_CONNS; c++) {
			struct conn *k = &conns[c];
			if (k->fd < 0) continue;
			nconns++;
			short ev = 0;
			if (!k->closing && !k->stalled_on && k->in_len < FRAME_HEADER_SIZE + FRAME_MAX_BODY) ev |= POLLIN;
			if (buf_pending(&k->out)) ev |= POLLOUT;
			else if (k->closing) { conn_close(c); continue; }
			pfds[n] = (struct pollfd){ .fd = k->fd, .events = ev };
			what[n++].kind = K_CONN, what[n - 1].idx = c;
		}
		if (nconns < MAX_CONNS) { pfds[n] = (struct pollfd){ .fd = lfd, .events = POLLIN }; what[n++].kind = K_LISTEN; }
		if (sfd >= 0) { pfds[n] = (struct pollfd){ .fd = sfd, .events = POLLIN }; what[n++].kind = K_SIGNAL; }
		for (int i = 0; i < MAX_PROCS; i++) {
			struct proc *p = &procs[i];
			if (!p->used || p->conn < 0) continue;
			int room = buf_pending(&conns[p->conn].out) < OUT_HIGH_WATER;
			if (p->in_fd >= 0 && buf_pending(&p->stdin_buf)) { pfds[n] = (struct pollfd){ .fd = p->in_fd, .events = POLLOUT }; what[n].kind = K_IN; what[n++].idx = i; }
			if (p->out_fd >= 0 && room) { pfds[n] = (struct pollfd){ .fd = p->out_fd, .events = POLLIN }; what[n].kind = K_OUT; what[n++].idx = i; }
			if (p->err_fd >= 0 && room) { pfds[n] = (struct pollfd){ .fd = p->err_fd, .events = POLLIN }; what[n].kind = K_ERR; what[n++].idx = i; }
		}
		/* Without a signalfd (it cannot fail on Linux, but still) poll wakes each second to reap. */
		int r = poll(pfds, n, sfd >= 0 ? -1 : 1000);
		if (r < 0) {
			if (errno != EINTR) { agent_log("poll: %s", strerror(errno)); sleep(1); }
			continue;
		}
		int chld_ready = sfd < 0;
		for (nfds_t j = 0; j < n; j++) {
			if (!pfds[j].revents) continue;
			int i = what[j].idx;
			struct proc *p = &procs[i];
			switch (what[j].kind) {
			case K_LISTEN: conn_accept(lfd); break;
			case K_SIGNAL: chld_ready = 1; break;
			case K_CONN:
				if (conns[i].fd != pfds[j].fd) break;
				if (pfds[j].revents & (POLLIN | POLLHUP | POLLERR)) conn_read(i);
				if (conns[i].fd >= 0 && (pfds[j].revents & POLLOUT)) conn_write(i);
				break;
			case K_IN:
				if (p->used && p->in_fd == pfds[j].fd) {
					flush_stdin(p);
					if (p->conn >= 0 && conns[p->conn].stalled_on == p->id && buf_pending(&p->stdin_buf) < STDIN_HIGH_WATER) conns[p->conn].stalled_on = 0;
				}
				break;
			case K_OUT:
				if (p->used && p->conn >= 0 && p->out_fd == pfds[j].fd) read_output(p, &p->out_fd, MSG_STDOUT);
				break;
			case K_ERR:
				if (p->used && p->conn >= 0 && p->err_fd == pfds[j].fd) read_output(p, &p->err_fd, MSG_STDERR);
				break;
			}
		}
		if (chld_ready) {
			struct signalfd_siginfo si;
			while (sfd >= 0 && read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {}
			reap();
		}
		/* Flush what the handlers queued without waiting for another poll round. */
		for (int c = 0; c < MAX_CONNS; c++)
			if (conns[c].fd >= 0 && buf_pending(&conns[c].out)) conn_write(c);
	}
}

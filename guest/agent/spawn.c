/*
 * START: parse the process spec (docs/agent-protocol.md, "START") and start
 * the process: pipes or a pty, fork, then in the child setsid, the terminal,
 * hostname, chroot, cwd, rlimits, groups, gid, uid and exec. A failure in
 * the child travels back over a close-on-exec pipe, so the host gets an
 * ERROR naming the step instead of a STARTED.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pty.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "agent.h"
#include "protocol.h"

static const char DEFAULT_PATH[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

struct rlim {
	uint32_t resource;
	uint64_t soft, hard;
};

struct spec {
	char **argv, **envp; /* NULL-terminated */
	size_t argc, envc;
	char *cwd, *hostname, *rootfs;
	uint32_t uid, gid;
	int have_uid, have_gid;
	gid_t groups[MAX_GROUPS];
	size_t ngroups;
	struct rlim rlimits[MAX_RLIMITS];
	size_t nrlimits;
	int terminal;
	uint16_t rows, cols;
	char *arena; /* every string above, NUL-terminated */
};

/* The steps of the child, named in the ERROR a failure sends. */
enum step { STEP_SETSID, STEP_TTY, STEP_DUP, STEP_HOSTNAME, STEP_CHROOT, STEP_CHDIR, STEP_RLIMIT, STEP_GROUPS, STEP_GID, STEP_UID, STEP_EXEC };
static const char *const STEP_NAMES[] = { "setsid", "controlling terminal", "dup2", "sethostname", "chroot", "chdir", "setrlimit", "setgroups", "setgid", "setuid", "exec" };

struct child_failure {
	int32_t step;
	int32_t err;
};

static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static void spec_free(struct spec *s)
{
	free(s->argv);
	free(s->envp);
	free(s->arena);
}

/* Parses a START body into s; on failure writes a message to err (size n) and returns -1. */
static int spec_parse(struct spec *s, const uint8_t *body, size_t len, char *err, size_t n)
{
	memset(s, 0, sizeof *s);
	size_t nargs = 0, nenv = 0;
	/* First pass: check the framing and count, so the arrays are allocated once. */
	for (size_t off = 0; off < len;) {
		if (len - off < FIELD_HEADER_SIZE) { snprintf(err, n, "field at byte %zu: truncated header", off); return -1; }
		uint8_t tag = body[off];
		uint32_t flen = rd32(body + off + 1);
		if (flen > len - off - FIELD_HEADER_SIZE) { snprintf(err, n, "field %u at byte %zu: length %u runs past the body", tag, off, flen); return -1; }
		if (tag == FIELD_ARG) nargs++;
		if (tag == FIELD_ENV) nenv++;
		off += FIELD_HEADER_SIZE + flen;
	}
	if (nargs > MAX_ARGS) { snprintf(err, n, "%zu ARG fields, at most %d", nargs, MAX_ARGS); return -1; }
	if (nenv > MAX_ENV) { snprintf(err, n, "%zu ENV fields, at most %d", nenv, MAX_ENV); return -1; }
	s->argv = calloc(nargs + 1, sizeof(char *));
	s->envp = calloc(nenv + 1, sizeof(char *));
	/* Every value plus a NUL fits in len bytes plus one per field. */
	s->arena = malloc(len + 1);
	if (!s->argv || !s->envp || !s->arena) { snprintf(err, n, "out of memory"); return -1; }
	char *a = s->arena;
	for (size_t off = 0; off < len;) {
		uint8_t tag = body[off];
		uint32_t flen = rd32(body + off + 1);
		const uint8_t *v = body + off + FIELD_HEADER_SIZE;
		off += FIELD_HEADER_SIZE + flen;
		char *str = NULL;
		if (tag == FIELD_ARG || tag == FIELD_ENV || tag == FIELD_CWD || tag == FIELD_HOSTNAME || tag == FIELD_ROOTFS) {
			if (memchr(v, 0, flen)) { snprintf(err, n, "field %u: a string with a NUL byte", tag); return -1; }
			str = a;
			memcpy(a, v, flen);
			a[flen] = 0;
			a += flen + 1;
		}
		switch (tag) {
		case FIELD_ARG:
			s->argv[s->argc++] = str;
			break;
		case FIELD_ENV:
			if (!strchr(str, '=') || str[0] == '=') { snprintf(err, n, "ENV %.64s: not KEY=VALUE", str); return -1; }
			s->envp[s->envc++] = str;
			break;
		case FIELD_CWD:
		case FIELD_ROOTFS:
			if (str[0] != '/') { snprintf(err, n, "%s %.64s: not an absolute path", tag == FIELD_CWD ? "CWD" : "ROOTFS", str); return -1; }
			if ((tag == FIELD_CWD ? s->cwd : s->rootfs) != NULL) { snprintf(err, n, "field %u given twice", tag); return -1; }
			*(tag == FIELD_CWD ? &s->cwd : &s->rootfs) = str;
			break;
		case FIELD_HOSTNAME:
			if (s->hostname) { snprintf(err, n, "HOSTNAME given twice"); return -1; }
			if (flen == 0 || flen > MAX_HOSTNAME) { snprintf(err, n, "HOSTNAME: %u bytes, must be 1 to %d", flen, MAX_HOSTNAME); return -1; }
			s->hostname = str;
			break;
		case FIELD_UID:
		case FIELD_GID:
		case FIELD_GROUP:
			if (flen != 4) { snprintf(err, n, "field %u: length %u, must be 4", tag, flen); return -1; }
			if (tag == FIELD_UID) {
				if (s->have_uid++) { snprintf(err, n, "UID given twice"); return -1; }
				s->uid = rd32(v);
			} else if (tag == FIELD_GID) {
				if (s->have_gid++) { snprintf(err, n, "GID given twice"); return -1; }
				s->gid = rd32(v);
			} else {
				if (s->ngroups == MAX_GROUPS) { snprintf(err, n, "more than %d GROUP fields", MAX_GROUPS); return -1; }
				s->groups[s->ngroups++] = rd32(v);
			}
			break;
		case FIELD_RLIMIT:
			if (flen != 20) { snprintf(err, n, "RLIMIT: length %u, must be 20", flen); return -1; }
			if (s->nrlimits == MAX_RLIMITS) { snprintf(err, n, "more than %d RLIMIT fields", MAX_RLIMITS); return -1; }
			s->rlimits[s->nrlimits].resource = rd32(v);
			s->rlimits[s->nrlimits].soft = rd64(v + 4);
			s->rlimits[s->nrlimits].hard = rd64(v + 12);
			if (s->rlimits[s->nrlimits].resource >= RLIM_NLIMITS) { snprintf(err, n, "RLIMIT: resource %u is not one of 0..%d", s->rlimits[s->nrlimits].resource, RLIM_NLIMITS - 1); return -1; }
			if (s->rlimits[s->nrlimits].soft > s->rlimits[s->nrlimits].hard) { snprintf(err, n, "RLIMIT %u: soft limit above the hard limit", s->rlimits[s->nrlimits].resource); return -1; }
			s->nrlimits++;
			break;
		case FIELD_TERMINAL:
			if (flen != 4) { snprintf(err, n, "TERMINAL: length %u, must be 4 (rows, cols)", flen); return -1; }
			if (s->terminal++) { snprintf(err, n, "TERMINAL given twice"); return -1; }
			s->rows = rd16(v);
			s->cols = rd16(v + 2);
			break;
		default:
			snprintf(err, n, "unknown field tag %u", tag);
			return -1;
		}
	}
	if (s->argc == 0) { snprintf(err, n, "no ARG field: args must name the program"); return -1; }
	return 0;
}

/* execvpe with the PATH of the new environment (musl's looks at the agent's own). */
static void exec_spec(const struct spec *s)
{
	const char *file = s->argv[0];
	if (strchr(file, '/')) { execve(file, s->argv, s->envp); return; }
	const char *path = DEFAULT_PATH;
	for (size_t i = 0; i < s->envc; i++)
		if (strncmp(s->envp[i], "PATH=", 5) == 0) path = s->envp[i] + 5;
	size_t flen = strlen(file);
	int seen_eacces = 0;
	char full[4096];
	for (const char *p = path;; p++) {
		const char *end = strchrnul(p, ':');
		size_t dlen = (size_t)(end - p);
		if (dlen + 1 + flen + 1 <= sizeof full) {
			memcpy(full, p, dlen);
			size_t k = dlen;
			if (k) full[k++] = '/';
			memcpy(full + k, file, flen + 1);
			execve(full, s->argv, s->envp);
			if (errno == EACCES) seen_eacces = 1;
			else if (errno != ENOENT && errno != ENOTDIR) return;
		}
		if (!*end) break;
		p = end;
	}
	errno = seen_eacces ? EACCES : ENOENT;
}

static void child_fail(int fd, enum step step)
{
	struct child_failure f = { step, errno };
	ssize_t r = write(fd, &f, sizeof f);
	(void)r;
	_exit(127);
}

/* The child: never returns. Every agent fd is close-on-exec, so only 0-2 survive exec. */
static void child(const struct spec *s, int in, int out, int err, int tty, int report)
{
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	if (setsid() < 0) child_fail(report, STEP_SETSID);
	if (tty >= 0) {
		if (ioctl(tty, TIOCSCTTY, 0) < 0) child_fail(report, STEP_TTY);
		in = out = err = tty;
	}
	if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) child_fail(report, STEP_DUP);
	if (s->hostname && sethostname(s->hostname, strlen(s->hostname)) < 0) child_fail(report, STEP_HOSTNAME);
	if (s->rootfs && (chdir(s->rootfs) < 0 || chroot(".") < 0)) child_fail(report, STEP_CHROOT);
	if (chdir(s->cwd ? s->cwd : "/") < 0) child_fail(report, STEP_CHDIR);
	for (size_t i = 0; i < s->nrlimits; i++) {
		struct rlimit r = { s->rlimits[i].soft == UINT64_MAX ? RLIM_INFINITY : s->rlimits[i].soft,
				    s->rlimits[i].hard == UINT64_MAX ? RLIM_INFINITY : s->rlimits[i].hard };
		if (setrlimit((int)s->rlimits[i].resource, &r) < 0) child_fail(report, STEP_RLIMIT);
	}
	if (setgroups(s->ngroups, s->groups) < 0) child_fail(report, STEP_GROUPS);
	if (setgid(s->gid) < 0) child_fail(report, STEP_GID);
	if (setuid(s->uid) < 0) child_fail(report, STEP_UID);
	exec_spec(s);
	child_fail(report, STEP_EXEC);
}

static void close_if(int *fd)
{
	if (*fd >= 0) close(*fd);
	*fd = -1;
}

/*
 * A pty for a process. With a rootfs, from the devpts instance mounted at its /dev/pts when there is one
 * (what OCI runtimes do): the process's ttyname() then finds its terminal inside the container. Else, or if
 * that fails, from the agent's own /dev/pts.
 */
static int open_pty(const char *rootfs, int *master, int *slave, const struct winsize *ws)
{
	if (rootfs) {
		char path[4096];
		int n = snprintf(path, sizeof path, "%s/dev/pts/ptmx", rootfs);
		int m = n > 0 && (size_t)n < sizeof path ? open(path, O_RDWR | O_NOCTTY | O_CLOEXEC) : -1;
		if (m >= 0) {
			int unlock = 0;
			int sl = ioctl(m, TIOCSPTLCK, &unlock) == 0 ? ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC) : -1;
			if (sl >= 0 && ioctl(sl, TIOCSWINSZ, ws) == 0) {
				*master = m;
				*slave = sl;
				return 0;
			}
			if (sl >= 0) close(sl);
			close(m);
		}
	}
	return openpty(master, slave, NULL, NULL, ws);
}

void handle_start(int c, uint32_t id, const uint8_t *body, size_t len)
{
	if (id == 0) { send_error(c, id, ERR_BAD_FRAME, 0, "START needs a process id other than 0"); return; }
	if (find_proc(c, id)) { send_error(c, id, ERR_ID_IN_USE, 0, "process id %u is in use on this connection", id); return; }
	struct proc *p = NULL;
	for (size_t i = 0; i < MAX_PROCS && !p; i++)
		if (!procs[i].used) p = &procs[i];
	if (!p) { send_error(c, id, ERR_LIMIT, 0, "%d processes run already", MAX_PROCS); return; }

	struct spec s;
	char msg[256];
	if (spec_parse(&s, body, len, msg, sizeof msg) < 0) {
		spec_free(&s);
		send_error(c, id, ERR_BAD_SPEC, 0, "START: %s", msg);
		return;
	}
	int pin[2] = { -1, -1 }, pout[2] = { -1, -1 }, perr[2] = { -1, -1 }, rep[2] = { -1, -1 };
	int master = -1, slave = -1, extra = -1;
	const char *what = "pipe2";
	int ok;
	if (s.terminal) {
		struct winsize ws = { .ws_row = s.rows, .ws_col = s.cols };
		what = "openpty";
		ok = open_pty(s.rootfs, &master, &slave, &ws) == 0;
		if (ok) {
			fcntl(master, F_SETFD, FD_CLOEXEC);
			fcntl(slave, F_SETFD, FD_CLOEXEC);
			what = "dup";
			extra = fcntl(master, F_DUPFD_CLOEXEC, 3);
			ok = extra >= 0;
		}
	} else {
		ok = pipe2(pin, O_CLOEXEC) == 0 && pipe2(pout, O_CLOEXEC) == 0 && pipe2(perr, O_CLOEXEC) == 0;
	}
	if (ok) { what = "pipe2"; ok = pipe2(rep, O_CLOEXEC) == 0; }
	pid_t pid = -1;
	if (ok) { what = "fork"; pid = fork(); ok = pid >= 0; }
	if (pid == 0) child(&s, pin[0], pout[1], perr[1], slave, rep[1]);
	int saved = errno;
	close_if(&pin[0]); close_if(&pout[1]); close_if(&perr[1]); close_if(&slave); close_if(&rep[1]);
	struct child_failure f = { -1, 0 };
	ssize_t got = 0;
	if (ok) {
		/* The child gets to exec (or fails) quickly: wait for its report; EOF means exec succeeded. */
		do got = read(rep[0], &f, sizeof f); while (got < 0 && errno == EINTR);
	}
	close_if(&rep[0]);
	if (!ok || got == (ssize_t)sizeof f) {
		if (ok) {
			int st;
			while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
			saved = f.err;
			what = f.step >= 0 && f.step <= STEP_EXEC ? STEP_NAMES[f.step] : "child";
		}
		close_if(&pin[1]); close_if(&pout[0]); close_if(&perr[0]); close_if(&master); close_if(&extra);
		const char *detail = f.step == STEP_EXEC ? s.argv[0] : f.step == STEP_CHDIR ? (s.cwd ? s.cwd : "/") : f.step == STEP_CHROOT ? s.rootfs : "";
		send_error(c, id, ERR_START_FAILED, saved, "%s%s%s: %s", what, *detail ? " " : "", detail, strerror(saved));
		spec_free(&s);
		return;
	}
	memset(p, 0, sizeof *p);
	p->used = 1;
	p->conn = c;
	p->id = id;
	p->pid = pid;
	p->terminal = s.terminal;
	if (s.terminal) {
		p->out_fd = master;
		p->in_fd = extra;
		p->err_fd = -1;
	} else {
		p->in_fd = pin[1];
		p->out_fd = pout[0];
		p->err_fd = perr[0];
	}
	set_nonblock(p->in_fd);
	set_nonblock(p->out_fd);
	if (p->err_fd >= 0) set_nonblock(p->err_fd);
	spec_free(&s);
	uint8_t b[4] = { (uint8_t)pid, (uint8_t)(pid >> 8), (uint8_t)(pid >> 16), (uint8_t)(pid >> 24) };
	send_frame(c, MSG_STARTED, id, b, sizeof b);
}

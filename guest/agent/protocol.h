/*
 * flintvm agent protocol, version 1: the constants shared by the agent's
 * sources. docs/agent-protocol.md is the specification; lib/agent/protocol.ts
 * is the host's side of the same numbers.
 */
#ifndef FLINTVM_AGENT_PROTOCOL_H
#define FLINTVM_AGENT_PROTOCOL_H

#define AGENT_PROTOCOL_VERSION 1u
#define AGENT_VSOCK_PORT 1024u

/* Frame header: u32 LE body length, u8 type, u32 LE process id. */
#define FRAME_HEADER_SIZE 9u
/* Largest body either side may send; a longer frame ends the connection. */
#define FRAME_MAX_BODY (1u << 20)
/* Largest STDOUT/STDERR body the agent sends. */
#define FRAME_MAX_OUTPUT 65536u

/* host -> agent */
#define MSG_START 0x01
#define MSG_STDIN 0x02
#define MSG_STDIN_CLOSE 0x03
#define MSG_RESIZE 0x04
#define MSG_SIGNAL 0x05

/* agent -> host */
#define MSG_HELLO 0x80
#define MSG_STARTED 0x81
#define MSG_STDOUT 0x82
#define MSG_STDERR 0x83
#define MSG_EXIT 0x84
#define MSG_ERROR 0x85

/* START body: fields of u8 tag, u32 LE length, value. */
#define FIELD_ARG 1
#define FIELD_ENV 2
#define FIELD_CWD 3
#define FIELD_UID 4
#define FIELD_GID 5
#define FIELD_GROUP 6
#define FIELD_RLIMIT 7
#define FIELD_HOSTNAME 8
#define FIELD_TERMINAL 9
#define FIELD_ROOTFS 10
#define FIELD_HEADER_SIZE 5u

#define MAX_ARGS 4096
#define MAX_ENV 4096
#define MAX_GROUPS 64
#define MAX_RLIMITS 16
#define MAX_HOSTNAME 64

/* EXIT body: u8 kind, u32 LE value. */
#define EXIT_KIND_CODE 0
#define EXIT_KIND_SIGNAL 1

/* ERROR body: u32 LE code, u32 LE errno (0: none), UTF-8 message. */
#define ERR_BAD_FRAME 1      /* unknown type, wrong body length, id 0 where one is needed */
#define ERR_BAD_SPEC 2       /* a START body that does not parse or is out of range */
#define ERR_ID_IN_USE 3      /* START with an id that names a live process of this connection */
#define ERR_NO_SUCH_PROCESS 4 /* an id that names no live process of this connection */
#define ERR_START_FAILED 5   /* the process could not be started (errno says why) */
#define ERR_LIMIT 6          /* too many processes */
#define ERR_NOT_TERMINAL 7   /* RESIZE for a process without a terminal */
#define ERR_SIGNAL_FAILED 8  /* kill(2) failed */
#define ERR_FRAME_TOO_LONG 9 /* body length over FRAME_MAX_BODY: the connection is closed after this */

#endif

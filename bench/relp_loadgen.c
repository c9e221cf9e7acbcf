/*
 * Numbered RFC 5424 messages to a collector, as fast as it takes them:
 *
 *   relp: each connection opens a RELP session the way librelp (rsyslog's
 *         omrelp) does: `1 open 86 relp_version=0\nrelp_software=...\n
 *         commands=syslog`, the answer must be `200 OK` offering `syslog`;
 *         then `TXNR syslog LEN MSG` frames, at most WINDOW unacknowledged
 *         (omrelp's default is 128), every `rsp` checked: `200 OK`, for the
 *         oldest TXNR outstanding (answers come in order); at the end `close`,
 *         whose answer is awaited.  A message counts once acknowledged.
 *   tcp:  octet-counted frames (RFC 6587) written as fast as the socket takes
 *         them; nothing comes back, so a message counts once written (the
 *         receiver counts what arrived).
 *
 * Message numbers 0..MESSAGES-1 are split into one contiguous range per
 * connection, each message the same 99 bytes as bench/run.py's: `<13>1
 * 2026-11-20T21:39:31.334991Z bench app - - - message 00000042 xxx...`.
 * One epoll thread; bench/relay.py pins it to its own core.
 *
 * usage: relp_loadgen relp|tcp HOST PORT CONNECTIONS WINDOW MESSAGES
 * prints: messages=N seconds=S rps=R started=T0 finished=T1 all=N
 *   (T0: every session open; T1: the last acknowledgement (relp) or the last
 *   write (tcp); both CLOCK_MONOTONIC seconds, Python's time.monotonic())
 * exits 1, saying why, on a refused session, an answer out of order, a
 * status other than 200 or a connection closed early.
 */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MESSAGE_SIZE 99
#define OFFERS "relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog"
#define INPUT_SIZE (1 << 16)
/* An `rsp` answer to `syslog` is about 16 bytes; an `open` answer under 256. */
#define MAX_ANSWER 4096

struct conn {
    int fd;
    uint64_t next, end;        /* messages of this connection still to send: [next, end) */
    uint64_t acked;            /* messages acknowledged */
    uint64_t txnr;             /* TXNR of the next frame sent */
    uint64_t oldest;           /* TXNR of the oldest frame unanswered */
    uint64_t outstanding;      /* frames sent and unanswered */
    int state;                 /* OPENING, SENDING, CLOSING, DONE */
    char *out;                 /* bytes still to write */
    size_t out_len, out_off, out_cap;
    char in[INPUT_SIZE];
    size_t in_len;
};

enum { OPENING, SENDING, CLOSING, DONE };

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void fail(const char *format, ...) {
    va_list args;
    va_start(args, format);
    vfprintf(stderr, format, args);
    va_end(args);
    fputc('\n', stderr);
    exit(1);
}

/* librelp's relpEngineNextTXNR: TXNRs run from 1 to 999999999, then start at 1 again. */
static uint64_t next_txnr(uint64_t txnr) { return txnr > 999999999 ? 1 : txnr + 1; }

static size_t message(char *into, uint64_t n) {
    int head = snprintf(into, MESSAGE_SIZE + 1,
                        "<13>1 2026-11-20T21:39:31.334991Z bench app - - - message %08llu ",
                        (unsigned long long)n);
    memset(into + head, 'x', MESSAGE_SIZE - head);
    return MESSAGE_SIZE;
}

static void reserve(struct conn *c, size_t more) {
    if (c->out_len + more <= c->out_cap) return;
    if (c->out_off) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    while (c->out_len + more > c->out_cap) c->out_cap = c->out_cap ? c->out_cap * 2 : 1 << 16;
    c->out = realloc(c->out, c->out_cap);
    if (!c->out) fail("out of memory");
}

static void relp_frame(struct conn *c, const char *command, const char *data, size_t size) {
    reserve(c, size + 64);
    char *at = c->out + c->out_len;
    int head = size ? sprintf(at, "%llu %s %zu ", (unsigned long long)c->txnr, command, size)
                    : sprintf(at, "%llu %s 0", (unsigned long long)c->txnr, command);
    memcpy(at + head, data, size);
    at[head + size] = '\n';
    c->out_len += head + size + 1;
    c->txnr = next_txnr(c->txnr);
    c->outstanding += 1;
}

/* Frames up to the window; in tcp mode a batch of octet-counted frames. */
static void fill(struct conn *c, int relp, uint64_t window) {
    char text[MESSAGE_SIZE + 1];
    if (relp) {
        while (c->state == SENDING && c->next < c->end && c->outstanding < window) {
            relp_frame(c, "syslog", text, message(text, c->next));
            c->next += 1;
        }
        return;
    }
    for (int i = 0; i < 512 && c->next < c->end; i++) {
        reserve(c, MESSAGE_SIZE + 16);
        size_t size = message(text, c->next);
        c->out_len += sprintf(c->out + c->out_len, "%zu ", size);
        memcpy(c->out + c->out_len, text, size);
        c->out_len += size;
        c->next += 1;
    }
}

/* Writes what is pending; whether it all left. */
static int flush(struct conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            if (errno == EINTR) continue;
            fail("write: %s", strerror(errno));
        }
        c->out_off += (size_t)w;
    }
    c->out_off = c->out_len = 0;
    return 1;
}

/* One whole frame at the start of BUF (LEN bytes): its size, 0 if incomplete. */
static size_t parse_frame(const char *buf, size_t len, uint64_t *txnr, const char **command,
                          size_t *command_len, const char **data, size_t *data_len) {
    size_t i = 0;
    *txnr = 0;
    while (i < len && buf[i] >= '0' && buf[i] <= '9') *txnr = *txnr * 10 + (uint64_t)(buf[i++] - '0');
    if (i == len) return 0;
    if (i == 0 || i > 9 || buf[i++] != ' ') fail("bad answer: no TXNR");
    *command = buf + i;
    while (i < len && buf[i] != ' ') i++;
    if (i == len) return 0;
    *command_len = (size_t)(buf + i - *command);
    i++;
    size_t size = 0, digits = 0;
    while (i < len && buf[i] >= '0' && buf[i] <= '9') {
        size = size * 10 + (size_t)(buf[i++] - '0');
        if (++digits > 9 || size > MAX_ANSWER) fail("bad answer: DATALEN %zu too large", size);
    }
    if (i == len) return 0;
    if (size) {
        if (buf[i++] != ' ') fail("bad answer: no space before DATA");
    }
    if (len < i + size + 1) return 0;
    *data = buf + i;
    *data_len = size;
    if (buf[i + size] != '\n') fail("bad answer: frame not ended by LF");
    return i + size + 1;
}

static int starts(const char *data, size_t len, const char *prefix) {
    size_t n = strlen(prefix);
    return len >= n && memcmp(data, prefix, n) == 0;
}

/* Reads and checks the answers; returns messages newly acknowledged. */
static uint64_t receive(struct conn *c) {
    uint64_t acknowledged = 0;
    for (;;) {
        ssize_t r = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            fail("read: %s", strerror(errno));
        }
        if (r == 0) {
            if (c->state == CLOSING) {
                c->state = DONE;
                return acknowledged;
            }
            fail("the server closed a session with %llu frames unanswered",
                 (unsigned long long)c->outstanding);
        }
        c->in_len += (size_t)r;
        size_t at = 0;
        for (;;) {
            uint64_t txnr;
            const char *command, *data;
            size_t command_len, data_len;
            size_t used = parse_frame(c->in + at, c->in_len - at, &txnr, &command, &command_len,
                                      &data, &data_len);
            if (!used) break;
            at += used;
            if (command_len == 11 && memcmp(command, "serverclose", 11) == 0)
                fail("the server sent serverclose with %llu frames unanswered",
                     (unsigned long long)c->outstanding);
            if (command_len != 3 || memcmp(command, "rsp", 3) != 0)
                fail("unexpected command from the server: %.*s", (int)command_len, command);
            if (!c->outstanding || txnr != c->oldest)
                fail("answer for TXNR %llu, expected %llu", (unsigned long long)txnr,
                     (unsigned long long)c->oldest);
            c->oldest = next_txnr(c->oldest);
            c->outstanding -= 1;
            if (c->state == OPENING) {
                if (!starts(data, data_len, "200 OK") || !memmem(data, data_len, "commands=syslog", 15))
                    fail("session refused: %.*s", (int)data_len, data);
                c->state = SENDING;
            } else if (c->state == CLOSING) {
                c->state = DONE; /* librelp's server sends `0 serverclose 0` next: not read */
                return acknowledged;
            } else {
                if (data_len != 6 || memcmp(data, "200 OK", 6) != 0)
                    fail("message refused: %.*s", (int)data_len, data);
                c->acked += 1;
                acknowledged += 1;
            }
        }
        memmove(c->in, c->in + at, c->in_len - at);
        c->in_len -= at;
        if (c->in_len == sizeof c->in) fail("an answer longer than %d bytes", INPUT_SIZE);
    }
    return acknowledged;
}

static void watch(int ep, struct conn *c, int index, int writing) {
    struct epoll_event ev = {.events = EPOLLIN | (writing ? EPOLLOUT : 0), .data.u32 = (uint32_t)index};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

int main(int argc, char **argv) {
    if (argc != 7 || (strcmp(argv[1], "relp") && strcmp(argv[1], "tcp"))) {
        fprintf(stderr, "usage: %s relp|tcp HOST PORT CONNECTIONS WINDOW MESSAGES\n", argv[0]);
        return 2;
    }
    int relp = strcmp(argv[1], "relp") == 0;
    int port = atoi(argv[3]), n = atoi(argv[4]);
    uint64_t window = strtoull(argv[5], NULL, 10), total = strtoull(argv[6], NULL, 10);
    if (n < 1 || window < 1) fail("CONNECTIONS and WINDOW must be at least 1");

    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, argv[2], &address.sin_addr) != 1) fail("HOST must be an IPv4 address");
    struct conn *conns = calloc((size_t)n, sizeof *conns);
    int ep = epoll_create1(0);
    for (int i = 0; i < n; i++) {
        struct conn *c = &conns[i];
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(c->fd, (struct sockaddr *)&address, sizeof address) < 0 && errno != EINPROGRESS)
            fail("connect: %s", strerror(errno));
        c->next = total * (uint64_t)i / (uint64_t)n;
        c->end = total * (uint64_t)(i + 1) / (uint64_t)n;
        c->txnr = c->oldest = 1;
        c->state = relp ? OPENING : SENDING;
        if (relp) relp_frame(c, "open", OFFERS, strlen(OFFERS));
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }

    double started = 0, finished = 0;
    int opening = relp ? n : 0, done = 0;
    uint64_t counted = 0;
    if (!relp) started = now();
    struct epoll_event events[1024];
    while (done < n) {
        int ready = epoll_wait(ep, events, 1024, 30000);
        if (ready < 0 && errno != EINTR) fail("epoll_wait: %s", strerror(errno));
        if (ready == 0) fail("no progress for 30 s: %llu of %llu messages counted",
                             (unsigned long long)counted, (unsigned long long)total);
        for (int e = 0; e < ready; e++) {
            int index = (int)events[e].data.u32;
            struct conn *c = &conns[index];
            if (c->state == DONE) continue;
            if (events[e].events & (EPOLLERR | EPOLLHUP) && !(events[e].events & EPOLLIN))
                fail("connection %d failed", index);
            if (relp && events[e].events & EPOLLIN) {
                int was_opening = c->state == OPENING;
                counted += receive(c);
                if (was_opening && c->state != OPENING && --opening == 0) started = now();
                if (c->state == SENDING && c->next == c->end && c->outstanding == 0) {
                    relp_frame(c, "close", "", 0);
                    c->state = CLOSING;
                }
            }
            if (c->state == DONE) {
                close(c->fd);
                done += 1;
                continue;
            }
            fill(c, relp, window);
            int all_out = flush(c);
            if (!relp && all_out && c->next == c->end) {
                counted += c->end - total * (uint64_t)index / (uint64_t)n;
                shutdown(c->fd, SHUT_WR);
                close(c->fd);
                c->state = DONE;
                done += 1;
                continue;
            }
            watch(ep, c, index, !all_out || (!relp && c->next < c->end));
        }
        if (counted == total && !finished) finished = now();
    }
    if (!finished) finished = now();
    double seconds = finished - started;
    printf("messages=%llu seconds=%.3f rps=%.0f started=%.6f finished=%.6f all=%llu\n",
           (unsigned long long)counted, seconds, counted / (seconds > 0 ? seconds : 1e-9), started,
           finished, (unsigned long long)counted);
    return 0;
}

/*
 * The far end of a forwarding benchmark: accepts TCP connections, cuts
 * octet-counted frames (RFC 6587: `LEN SP MSG`, as the suite's `tcp:`
 * targets send), and counts the messages, checking each by its number (the
 * `message 00000042` relp_loadgen.c writes), so that lost and duplicated
 * messages show.  One epoll thread, far cheaper per message than any
 * collector, so it is never what a forwarding rate measures.
 *
 * usage: octet_sink PORT EXPECTED IDLE_SECONDS
 *   PORT 0: a free one; the first line printed is `port=P`
 *   stops once EXPECTED distinct messages arrived, or IDLE_SECONDS after
 *   the last byte (or after its start, while nothing came)
 * prints: messages=N distinct=D duplicates=X unnumbered=U first=T0 last=T1
 *   (T0, T1: CLOCK_MONOTONIC seconds of the first and the last message,
 *   Python's time.monotonic())
 */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUFFER (1 << 20)
#define MAX_FRAME 65536
#define MAX_CONNECTIONS 64

struct conn {
    int fd;
    char *data;
    size_t len;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static uint64_t expected, messages, distinct, duplicates, unnumbered;
static unsigned char *seen;

static void count(const char *message, size_t size) {
    messages += 1;
    const char *at = memmem(message, size, "message ", 8);
    uint64_t number = 0;
    size_t digits = 0;
    if (at) {
        at += 8;
        while (at < message + size && *at >= '0' && *at <= '9' && digits < 18) {
            number = number * 10 + (uint64_t)(*at++ - '0');
            digits += 1;
        }
    }
    if (!digits || number >= expected) {
        unnumbered += 1;
    } else if (seen[number / 8] & (1u << (number % 8))) {
        duplicates += 1;
    } else {
        seen[number / 8] |= (unsigned char)(1u << (number % 8));
        distinct += 1;
    }
}

/* Counts the whole frames at the start of C's buffer; keeps the rest. */
static void frames(struct conn *c) {
    size_t at = 0;
    for (;;) {
        size_t i = at, size = 0;
        while (i < c->len && c->data[i] >= '0' && c->data[i] <= '9' && i - at < 6)
            size = size * 10 + (size_t)(c->data[i++] - '0');
        if (i == c->len) break;
        if (i == at || c->data[i] != ' ' || size > MAX_FRAME) {
            fprintf(stderr, "not an octet-counted frame at byte %zu\n", at);
            exit(1);
        }
        if (c->len < i + 1 + size) break;
        count(c->data + i + 1, size);
        at = i + 1 + size;
    }
    memmove(c->data, c->data + at, c->len - at);
    c->len -= at;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s PORT EXPECTED IDLE_SECONDS\n", argv[0]);
        return 2;
    }
    expected = strtoull(argv[2], NULL, 10);
    double idle = atof(argv[3]);
    seen = calloc(expected / 8 + 1, 1);
    int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0) die("bind");
    if (listen(listener, 64) < 0) die("listen");
    socklen_t length = sizeof address;
    getsockname(listener, (struct sockaddr *)&address, &length);
    printf("port=%d\n", ntohs(address.sin_port));
    fflush(stdout);

    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = MAX_CONNECTIONS};
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
    struct conn conns[MAX_CONNECTIONS] = {0};
    struct epoll_event events[64];
    double first = 0, last = 0, heard = now();
    while (distinct < expected) {
        int ready = epoll_wait(ep, events, 64, 50);
        if (ready < 0 && errno != EINTR) die("epoll_wait");
        if (ready <= 0) {
            if (now() - heard > idle) break;
            continue;
        }
        for (int e = 0; e < ready; e++) {
            uint32_t index = events[e].data.u32;
            if (index == MAX_CONNECTIONS) {
                int fd = accept(listener, NULL, NULL);
                if (fd < 0) continue;
                int slot = 0;
                while (slot < MAX_CONNECTIONS && conns[slot].data) slot++;
                if (slot == MAX_CONNECTIONS) {
                    close(fd);
                    continue;
                }
                conns[slot] = (struct conn){.fd = fd, .data = malloc(BUFFER), .len = 0};
                struct epoll_event add = {.events = EPOLLIN, .data.u32 = (uint32_t)slot};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &add);
                continue;
            }
            struct conn *c = &conns[index];
            ssize_t r = read(c->fd, c->data + c->len, BUFFER - c->len);
            if (r <= 0) {
                if (r < 0 && errno == EINTR) continue;
                close(c->fd);
                free(c->data);
                c->data = NULL;
                continue;
            }
            heard = now();
            c->len += (size_t)r;
            uint64_t before = messages;
            frames(c);
            if (messages > before) {
                if (!first) first = heard;
                last = heard;
            }
        }
    }
    printf("messages=%llu distinct=%llu duplicates=%llu unnumbered=%llu first=%.6f last=%.6f\n",
           (unsigned long long)messages, (unsigned long long)distinct,
           (unsigned long long)duplicates, (unsigned long long)unnumbered, first, last);
    return 0;
}

/*
 * AMP Lookup load generator: CONNECTIONS connections, each keeping DEPTH
 * Lookup(NAME) boxes outstanding; every answer box that arrives is replaced
 * by a new question.  One epoll thread, pinned to its own core by the bench.
 *
 * usage: amp_lookups HOST PORT CONNECTIONS DEPTH NAME SECONDS
 * prints (all: every answer, the warm-up's too): requests=N seconds=S rps=R errors=E
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUFFER (1 << 20)

struct conn {
    int fd;
    unsigned char *data;
    size_t used;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static size_t put(unsigned char *out, const char *key, const char *value) {
    size_t k = strlen(key), v = strlen(value);
    out[0] = k >> 8; out[1] = k & 255; memcpy(out + 2, key, k);
    out[2 + k] = v >> 8; out[3 + k] = v & 255; memcpy(out + 4 + k, value, v);
    return 4 + k + v;
}

/* Complete boxes at the start of DATA: count them (and errors), return bytes consumed. */
static size_t boxes(const unsigned char *data, size_t used, long *answers, long *errors) {
    size_t position = 0, start = 0;
    int error = 0;
    for (;;) {
        if (used - position < 2) break;
        size_t k = (data[position] << 8) | data[position + 1];
        if (k == 0) {
            position += 2;
            ++*answers;
            *errors += error;
            error = 0;
            start = position;
            continue;
        }
        if (used - position < 4 + k) break;
        size_t v = (data[position + 2 + k] << 8) | data[position + 3 + k];
        if (used - position < 4 + k + v) break;
        if (k == 6 && memcmp(data + position + 2, "_error", 6) == 0) error = 1;
        position += 4 + k + v;
    }
    return start;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s HOST PORT CONNECTIONS DEPTH NAME SECONDS\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[2]), n = atoi(argv[3]), depth = atoi(argv[4]);
    double seconds = atof(argv[6]), warmup = 0.5;
    unsigned char ask[512];
    size_t size = put(ask, "_ask", "1");
    size += put(ask + size, "_command", "Lookup");
    size += put(ask + size, "name", argv[5]);
    ask[size++] = 0; ask[size++] = 0;

    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, argv[1], &address.sin_addr);
    int ep = epoll_create1(0);
    struct conn *conns = calloc(n, sizeof *conns);
    unsigned char *burst = malloc(size * depth);
    for (int d = 0; d < depth; d++) memcpy(burst + d * size, ask, size);
    unsigned char *refill = malloc(size * depth);
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) { perror("connect"); return 1; }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conns[i].fd = fd;
        conns[i].data = malloc(BUFFER);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        if (write(fd, burst, size * depth) != (ssize_t)(size * depth)) { perror("write"); return 1; }
    }
    long answers = 0, errors = 0, counted_from = -1;
    double start = now(), from = start + warmup, end = from + seconds, t = start;
    struct epoll_event events[64];
    while (t < end) {
        int ready = epoll_wait(ep, events, 64, 100);
        for (int e = 0; e < ready; e++) {
            struct conn *c = &conns[events[e].data.u32];
            ssize_t r = read(c->fd, c->data + c->used, BUFFER - c->used);
            if (r <= 0) { fprintf(stderr, "server closed the connection\n"); return 1; }
            c->used += r;
            long before = answers;
            size_t consumed = boxes(c->data, c->used, &answers, &errors);
            memmove(c->data, c->data + consumed, c->used - consumed);
            c->used -= consumed;
            long got = answers - before;
            for (long g = 0; g < got; g++) memcpy(refill + g * size, ask, size);
            if (got && write(c->fd, refill, size * got) != (ssize_t)(size * got)) { perror("write"); return 1; }
        }
        t = now();
        if (counted_from < 0 && t >= from) { counted_from = answers; from = t; }
    }
    double elapsed = now() - from;
    long counted = answers - (counted_from < 0 ? 0 : counted_from);
    printf("requests=%ld seconds=%.3f rps=%.0f errors=%ld all=%ld\n", counted, elapsed, counted / elapsed,
           errors, answers);
    return 0;
}

/*
 * Closed-loop load generator: N connections, each sends one message and waits
 * for its whole answer before sending the next.  One epoll thread; it is
 * pinned to its own core by bench/run.py.  Its ceiling is shown against
 * native_echo.c so a slow server is never the generator's fault.
 *
 * usage: loadgen HOST PORT CONNECTIONS SIZE SECONDS raw|line [DEPTH]
 *   raw:  SIZE bytes out, the same SIZE bytes back
 *   line: SIZE-1 bytes + LF out, one line (up to LF) back
 *   DEPTH (default 1): messages sent in one write, all answered before the
 *   next write; each counts as a request
 * prints: requests=N seconds=S rps=R p50_us=X p99_us=Y all=T
 *   (all: every answer, the warm-up's too, for CPU per request)
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

struct conn {
    int fd;
    size_t got;  /* bytes (raw) or lines (line) of the answer so far */
    double sent_at;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int compare(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: %s HOST PORT CONNECTIONS SIZE SECONDS raw|line [DEPTH]\n", argv[0]);
        return 2;
    }
    size_t depth = argc == 8 ? (size_t)atoi(argv[7]) : 1;
    const char *host = argv[1];
    int port = atoi(argv[2]), n = atoi(argv[3]);
    size_t size = (size_t)atoi(argv[4]);
    double seconds = atof(argv[5]), warmup = 0.5;
    int line = strcmp(argv[6], "line") == 0;
    char *message = malloc(size * depth);
    memset(message, 'a', size * depth);
    if (line)
        for (size_t d = 1; d <= depth; d++) message[d * size - 1] = '\n';
    size = size * depth;  /* what one write sends */
    char buffer[65536];

    struct conn *conns = calloc(n, sizeof *conns);
    int ep = epoll_create1(0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &address.sin_addr);
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        if (fd < 0) die("socket");
        if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) die("connect");
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }

    size_t capacity = 1 << 20, count = 0, all = 0;
    float *latencies = malloc(capacity * sizeof *latencies);
    double start = now(), measure_from = start + warmup, end = measure_from + seconds;
    for (int i = 0; i < n; i++) {
        conns[i].sent_at = now();
        if (write(conns[i].fd, message, size) != (ssize_t)size) die("write");
    }
    struct epoll_event events[1024];
    double t = start;
    while (t < end) {
        int ready = epoll_wait(ep, events, 1024, 100);
        if (ready < 0 && errno != EINTR) die("epoll_wait");
        for (int e = 0; e < ready; e++) {
            struct conn *c = &conns[events[e].data.u32];
            ssize_t r = read(c->fd, buffer, sizeof buffer);
            if (r <= 0) {
                fprintf(stderr, "server closed a connection\n");
                return 1;
            }
            if (line) {
                for (ssize_t b = 0; b < r; b++) c->got += buffer[b] == '\n';
            } else {
                c->got += (size_t)r;
            }
            int complete = line ? c->got >= depth : c->got >= size;
            if (!complete) continue;
            all += depth;
            t = now();
            if (t >= measure_from) {
                if (count == capacity) {
                    capacity *= 2;
                    latencies = realloc(latencies, capacity * sizeof *latencies);
                }
                latencies[count] = (float)((t - c->sent_at) * 1e6);
                count += 1;
            }
            c->got = 0;
            c->sent_at = t;
            if (write(c->fd, message, size) != (ssize_t)size) die("write");
        }
        if (ready == 0) t = now();
    }
    double elapsed = now() - measure_from;
    qsort(latencies, count, sizeof *latencies, compare);
    printf("requests=%zu seconds=%.3f rps=%.0f p50_us=%.1f p99_us=%.1f all=%zu\n", count * depth,
           elapsed, count * depth / elapsed, count ? latencies[count / 2] : 0.0,
           count ? latencies[(size_t)(count * 0.99)] : 0.0, all);
    return 0;
}

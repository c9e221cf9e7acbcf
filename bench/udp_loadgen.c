/*
 * UDP echo load generator: WINDOW datagrams of SIZE bytes outstanding to one
 * server; each reply is answered by a new datagram.  A window slot whose reply
 * does not come within 20 ms (dropped: rate limit, full buffer) is sent
 * again and counted lost.  Pinned to its own core by bench/run.py.
 *
 * usage: udp_loadgen HOST PORT WINDOW SIZE SECONDS
 * prints (all: every answer, the warm-up's too): requests=N seconds=S rps=R lost=L
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s HOST PORT WINDOW SIZE SECONDS\n", argv[0]);
        return 2;
    }
    int window = atoi(argv[3]);
    size_t size = (size_t)atoi(argv[4]);
    double seconds = atof(argv[5]), warmup = 0.5;
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &address.sin_addr);
    int sock = socket(AF_INET, SOCK_DGRAM, 0);
    if (connect(sock, (struct sockaddr *)&address, sizeof address) < 0) {
        perror("connect");
        return 1;
    }
    char *message = malloc(size), buffer[65536];
    memset(message, 'a', size);
    for (int i = 0; i < window; i++) send(sock, message, size, 0);
    long answers = 0, lost = 0, counted_from = -1, lost_from = 0;
    double start = now(), from = start + warmup, end = from + seconds, t = start;
    struct pollfd waiting = {.fd = sock, .events = POLLIN};
    while (t < end) {
        int ready = poll(&waiting, 1, 20);
        if (ready == 0) {  /* the whole window went missing: send it again */
            for (int i = 0; i < window; i++) send(sock, message, size, 0);
            lost += window;
        }
        while (ready > 0) {
            ssize_t r = recv(sock, buffer, sizeof buffer, MSG_DONTWAIT);
            if (r < 0) break;
            answers++;
            send(sock, message, size, 0);
        }
        t = now();
        if (counted_from < 0 && t >= from) { counted_from = answers; lost_from = lost; from = t; }
    }
    double elapsed = now() - from;
    long counted = answers - (counted_from < 0 ? 0 : counted_from);
    printf("requests=%ld seconds=%.3f rps=%.0f lost=%ld all=%ld\n", counted, elapsed, counted / elapsed,
           lost - lost_from, answers);
    return 0;
}

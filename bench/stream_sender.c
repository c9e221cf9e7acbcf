/*
 * A collector benchmark's sender: the bytes of FILE (whole messages of
 * SIZE bytes each) over CONNECTIONS TCP connections to 127.0.0.1:PORT,
 * each connection an equal run of whole messages, written by a thread of
 * its own in 256 KiB writes; then each half-closes and reads until the
 * server closes, so that nothing sent is reset away.  All connections are
 * made before any byte is sent.  A sender in C costs the two cores a small
 * part of what the collector does per message, so that a comparison of
 * one collector process with two workers measures the collector, not the
 * sender sharing its cores.
 *
 * usage: stream_sender PORT CONNECTIONS SIZE FILE
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK (256 * 1024)
#define MAX_CONNECTIONS 1024

struct run {
    int fd;
    const char *data;
    size_t len;
    int failed;
};

static void *send_run(void *argument) {
    struct run *run = argument;
    size_t sent = 0;
    while (sent < run->len) {
        size_t want = run->len - sent < CHUNK ? run->len - sent : CHUNK;
        ssize_t n = send(run->fd, run->data + sent, want, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("send");
            run->failed = 1;
            return NULL;
        }
        sent += (size_t)n;
    }
    shutdown(run->fd, SHUT_WR);
    char sink[4096];
    while (read(run->fd, sink, sizeof sink) > 0) {
    }
    close(run->fd);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s PORT CONNECTIONS SIZE FILE\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]), connections = atoi(argv[2]);
    size_t size = (size_t)atol(argv[3]);
    if (connections < 1 || connections > MAX_CONNECTIONS || size == 0) {
        fprintf(stderr, "bad CONNECTIONS or SIZE\n");
        return 2;
    }
    int file = open(argv[4], O_RDONLY);
    struct stat st;
    if (file < 0 || fstat(file, &st) < 0) {
        perror(argv[4]);
        return 1;
    }
    size_t length = (size_t)st.st_size;
    const char *data = length ? mmap(NULL, length, PROT_READ, MAP_PRIVATE, file, 0) : "";
    if (data == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    size_t messages = length / size;
    struct run runs[MAX_CONNECTIONS];
    pthread_t threads[MAX_CONNECTIONS];
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    for (int i = 0; i < connections; i++) {
        size_t first = messages * (size_t)i / (size_t)connections;
        size_t last = messages * (size_t)(i + 1) / (size_t)connections;
        runs[i].data = data + first * size;
        runs[i].len = (last - first) * size;
        runs[i].failed = 0;
        runs[i].fd = socket(AF_INET, SOCK_STREAM, 0);
        if (runs[i].fd < 0 || connect(runs[i].fd, (struct sockaddr *)&address, sizeof address)) {
            perror("connect");
            return 1;
        }
    }
    for (int i = 0; i < connections; i++)
        pthread_create(&threads[i], NULL, send_run, &runs[i]);
    int failed = 0;
    for (int i = 0; i < connections; i++) {
        pthread_join(threads[i], NULL);
        failed |= runs[i].failed;
    }
    return failed;
}

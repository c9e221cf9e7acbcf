/*
 * A trivial epoll echo server in C: the ceiling the load generator must reach
 * far above any Python server, proving it is not the bottleneck.
 * usage: native_echo PORT [udp]
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static int udp_echo(int port) {
    int sock = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(sock, (struct sockaddr *)&address, sizeof address) < 0) {
        perror("bind");
        return 1;
    }
    char buffer[65536];
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t length = sizeof peer;
        ssize_t r = recvfrom(sock, buffer, sizeof buffer, 0, (struct sockaddr *)&peer, &length);
        if (r > 0) sendto(sock, buffer, (size_t)r, 0, (struct sockaddr *)&peer, length);
    }
}

int main(int argc, char **argv) {
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: %s PORT [udp]\n", argv[0]);
        return 2;
    }
    if (argc == 3) return udp_echo(atoi(argv[1]));
    int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1])),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0 || listen(listener, 1024) < 0) {
        perror("listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = listener};
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
    struct epoll_event events[1024];
    char buffer[65536];
    for (;;) {
        int ready = epoll_wait(ep, events, 1024, -1);
        for (int e = 0; e < ready; e++) {
            int fd = events[e].data.fd;
            if (fd == listener) {
                int client = accept(listener, NULL, NULL);
                if (client < 0) continue;
                setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                struct epoll_event cev = {.events = EPOLLIN, .data.fd = client};
                epoll_ctl(ep, EPOLL_CTL_ADD, client, &cev);
                continue;
            }
            ssize_t r = read(fd, buffer, sizeof buffer);
            if (r <= 0 || write(fd, buffer, (size_t)r) != r) close(fd);
        }
    }
}

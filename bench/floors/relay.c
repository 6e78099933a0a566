/* The floor of a native terminal server: bench/floors/relay.py's relay in C.
 *
 * One WebSocket connection relayed to one agent on a PTY with epoll and blocking-free
 * reads: the least any server, in any language, does per keystroke (two socket calls,
 * two PTY calls, two epoll waits). The upgrade is answered with a 101 (the key is not
 * checked: only the keystroke path is measured). bench/terminal.py builds it with the
 * machine's C compiler when there is one and measures it in the same rounds as the
 * raw PTY and the servers, so the gap between a raw PTY and any server over two
 * loopback hops is known in the same run.
 *
 *     cc -O2 -o relay relay.c -lutil && ./relay PORT AGENT [ARG ...]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pty.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static const char UPGRADED[] =
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";

static int write_all(int fd, const unsigned char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) return -1;
        p += w, n -= (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int one = 1, listener = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in at = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&at, sizeof at) || listen(listener, 1)) {
        perror("relay: bind");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    int client = accept(listener, NULL, NULL);
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    static unsigned char in[1 << 16], out[4 + (1 << 16)];
    size_t have = 0;
    for (;;) { /* the request's head */
        ssize_t n = read(client, in + have, sizeof in - have);
        if (n <= 0) return 1;
        have += (size_t)n;
        unsigned char *end = memmem(in, have, "\r\n\r\n", 4);
        if (end) {
            size_t used = (size_t)(end + 4 - in);
            memmove(in, in + used, have - used);
            have -= used;
            break;
        }
    }
    int master;
    pid_t agent = forkpty(&master, NULL, NULL, NULL);
    if (agent == 0) {
        execvp(argv[2], argv + 2);
        _exit(127);
    }
    write_all(client, (const unsigned char *)UPGRADED, sizeof UPGRADED - 1);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.fd = client;
    epoll_ctl(ep, EPOLL_CTL_ADD, client, &ev);
    ev.data.fd = master;
    epoll_ctl(ep, EPOLL_CTL_ADD, master, &ev);
    for (;;) {
        struct epoll_event ready[2];
        int k = epoll_wait(ep, ready, 2, -1);
        for (int i = 0; i < k; i++) {
            if (ready[i].data.fd == master) {
                ssize_t n = read(master, out + 4, 65535);
                if (n <= 0) goto done;
                size_t head = 2;
                out[2] = 0x82; /* the header goes right before the payload */
                if (n < 126) {
                    out[3] = (unsigned char)n;
                } else {
                    head = 4, out[0] = 0x82, out[1] = 126;
                    out[2] = (unsigned char)(n >> 8), out[3] = (unsigned char)n;
                }
                if (write_all(client, out + 4 - head, head + (size_t)n)) goto done;
                continue;
            }
            ssize_t n = read(client, in + have, sizeof in - have);
            if (n <= 0) goto done;
            have += (size_t)n;
            while (have >= 6) { /* whole client frames: header, mask, payload */
                size_t size = in[1] & 0x7F, off = 2;
                if (size == 126) size = (size_t)in[2] << 8 | in[3], off = 4;
                if (size == 127) goto done; /* not sent by the bench */
                if (have < off + 4 + size) break;
                unsigned char *mask = in + off, *payload = in + off + 4;
                for (size_t j = 0; j < size; j++) payload[j] ^= mask[j & 3];
                int opcode = in[0] & 0x0F;
                if (opcode == 0x8) goto done;
                if ((opcode == 0x1 || opcode == 0x2) && write_all(master, payload, size)) goto done;
                memmove(in, payload + size, have - (off + 4 + size));
                have -= off + 4 + size;
            }
        }
    }
done:
    kill(agent, SIGKILL);
    waitpid(agent, NULL, 0);
    return 0;
}

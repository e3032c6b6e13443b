/* A small WebSocket load generator for bench/compare.py (Linux, epoll).
 *
 * Built by compare.py on first use: gcc -O2 -o CACHE/loadgen bench/loadgen.c
 * Arguments are key=value pairs; the result is one line of JSON on stdout.
 *
 *   mode=echo port=P conns=C frame=FILE warmup=S duration=S pid=SERVERPID [deflate=1]
 *       Opens C connections (handshake, offering permessage-deflate with
 *       client_no_context_takeover if deflate=1), then runs a closed loop on each: write the
 *       next pre-masked frame read from FILE (built once by compare.py, compressed there if
 *       asked; FILE may hold several frames, sent in turn), wait for the whole echo, go on. Replies are never unmasked, inflated or
 *       copied: only frame headers are parsed and payload bytes counted. Between the two marks
 *       (after `warmup` seconds, then `duration` seconds later) it counts echoes, reply
 *       payload bytes, its own CPU time and the server's (all threads, /proc/PID/task/ST/schedstat).
 *
 *   mode=handshake port=P conns=C warmup=S duration=S pid=SERVERPID
 *       C openers, each in a loop: connect, send the upgrade request, read the 101, send a
 *       close frame, read until the server's TCP FIN, close. One cycle = one handshake: the
 *       server's whole set-up and tear-down of a connection.
 *
 *   mode=idle port=P conns=N [frame=FILE] [deflate=1]
 *       Opens N connections (and echoes FILE's frame once on each, if given), prints
 *       {"ready": N}, then waits for a line (or EOF) on stdin, closes them all and prints
 *       {"done": N}.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RBUF (256 * 1024)

static int port, nconns, deflate_offer, server_pid;
static double warmup = 0.3, duration = 1.0;
static const char *mode = "echo", *frame_file;
static unsigned char *frame; /* the frame file: one or more pre-masked frames, sent in turn */
static size_t frame_len;
#define MAXFRAMES 256
static unsigned char *frames[MAXFRAMES];
static size_t frame_lens[MAXFRAMES];
static int nframes;
static unsigned char rbuf[RBUF];
static char request[512];
static size_t request_len;
static const unsigned char close_frame[] = {0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2};

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double own_cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* CPU seconds of every thread of the server so far (schedstat: nanoseconds on CPU). */
static double server_cpu(void) {
    char path[320], line[128];
    double total = 0;
    if (!server_pid) return 0;
    snprintf(path, sizeof path, "/proc/%d/task", server_pid);
    DIR *dir = opendir(path);
    if (!dir) return -1;
    struct dirent *entry;
    while ((entry = readdir(dir))) {
        if (entry->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/proc/%d/task/%s/schedstat", server_pid, entry->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        if (fgets(line, sizeof line, f)) total += strtoull(line, NULL, 10) / 1e9;
        fclose(f);
    }
    closedir(dir);
    return total;
}

static void build_request(void) {
    request_len = (size_t)snprintf(
        request, sizeof request,
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
        port,
        deflate_offer ? "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n"
                      : "");
}

static int open_socket(int nonblocking) {
    int fd = socket(AF_INET, SOCK_STREAM | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS)
        die("connect");
    return fd;
}

static void write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("write");
        }
        p += n;
        len -= (size_t)n;
    }
}

/* Blocking handshake on a fresh socket; checks the 101 and the extension answer. */
static int blocking_open(void) {
    int fd = open_socket(0);
    write_all(fd, request, request_len);
    char head[4096];
    size_t got = 0;
    while (got < sizeof head - 1) {
        ssize_t n = read(fd, head + got, 1); /* byte by byte: never read past the head */
        if (n <= 0) die("handshake read");
        got += (size_t)n;
        if (got >= 4 && memcmp(head + got - 4, "\r\n\r\n", 4) == 0) break;
    }
    head[got] = 0;
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "loadgen: handshake refused: %.80s\n", head);
        exit(1);
    }
    if (deflate_offer && !strcasestr(head, "permessage-deflate")) {
        fprintf(stderr, "loadgen: server did not accept permessage-deflate\n");
        exit(1);
    }
    return fd;
}

/* --- frame counting ------------------------------------------------------------------------ */

typedef struct {
    int fd;
    unsigned char head[14];
    int head_len;      /* bytes of a partial header */
    uint64_t remaining; /* payload bytes of the current frame still to come */
    int fin, opcode;
    size_t out_off;    /* bytes of the frame written so far (when a write was short) */
    int next;          /* index of the frame to send next */
    int writing;
    int phase;         /* handshake mode: 0 connecting, 1 reading 101, 2 reading close, 3 EOF */
    char hs[1024];
    size_t hs_len;
} conn_t;

static uint64_t count, rx_bytes;
static int running = 1, in_flight, epfd;

static void arm(conn_t *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl");
}

static void send_frame(conn_t *c) {
    const unsigned char *f = frames[c->next];
    size_t flen = frame_lens[c->next];
    while (c->out_off < flen) {
        ssize_t n = write(c->fd, f + c->out_off, flen - c->out_off);
        if (n < 0) {
            if (errno == EAGAIN) {
                if (!c->writing) arm(c, EPOLLIN | EPOLLOUT);
                c->writing = 1;
                return;
            }
            die("write");
        }
        c->out_off += (size_t)n;
    }
    c->out_off = 0;
    c->next = (c->next + 1) % nframes;
    if (c->writing) arm(c, EPOLLIN);
    c->writing = 0;
}

/* Parse headers in data, count finished data messages; returns 1 for each whole echo. */
static int consume(conn_t *c, const unsigned char *data, size_t len) {
    int done = 0;
    size_t pos = 0;
    while (pos < len) {
        if (c->remaining) {
            uint64_t take = len - pos < c->remaining ? len - pos : c->remaining;
            c->remaining -= take;
            pos += take;
            rx_bytes += take;
            if (c->remaining) break;
        } else {
            while (c->head_len < 2 && pos < len) c->head[c->head_len++] = data[pos++];
            if (c->head_len < 2) break;
            int l7 = c->head[1] & 0x7f;
            int need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + ((c->head[1] & 0x80) ? 4 : 0);
            while (c->head_len < need && pos < len) c->head[c->head_len++] = data[pos++];
            if (c->head_len < need) break;
            uint64_t plen = (uint64_t)l7;
            if (l7 == 126) plen = ((uint64_t)c->head[2] << 8) | c->head[3];
            else if (l7 == 127) {
                plen = 0;
                for (int i = 2; i < 10; i++) plen = (plen << 8) | c->head[i];
            }
            c->fin = c->head[0] & 0x80;
            c->opcode = c->head[0] & 0x0f;
            c->head_len = 0;
            c->remaining = plen;
            if (plen) continue;
        }
        /* A frame ended. */
        if (c->opcode == 8) {
            if (c->phase >= 2) { /* handshake mode: the server's close frame */
                c->phase = 3;
                continue;
            }
            fprintf(stderr, "loadgen: the server closed the connection\n");
            exit(1);
        }
        if (c->fin && c->opcode < 3) done++;
    }
    return done;
}

static void echo_readable(conn_t *c) {
    for (;;) {
        ssize_t n = read(c->fd, rbuf, RBUF);
        if (n < 0) {
            if (errno == EAGAIN) return;
            die("read");
        }
        if (n == 0) {
            fprintf(stderr, "loadgen: EOF from the server\n");
            exit(1);
        }
        int done = consume(c, rbuf, (size_t)n);
        for (int i = 0; i < done; i++) {
            count++;
            if (running) send_frame(c);
            else in_flight--;
        }
        if (n < RBUF) return;
    }
}

static void load_frame(void) {
    int fd = open(frame_file, O_RDONLY);
    if (fd < 0) die(frame_file);
    struct stat st;
    fstat(fd, &st);
    frame_len = (size_t)st.st_size;
    frame = malloc(frame_len);
    size_t got = 0;
    while (got < frame_len) {
        ssize_t n = read(fd, frame + got, frame_len - got);
        if (n <= 0) die("frame read");
        got += (size_t)n;
    }
    close(fd);
    /* Split into frames by their headers (client frames: always masked). */
    size_t pos = 0;
    while (pos < frame_len && nframes < MAXFRAMES) {
        const unsigned char *h = frame + pos;
        uint64_t plen = h[1] & 0x7f;
        size_t hlen = 2;
        if (plen == 126) {
            plen = ((uint64_t)h[2] << 8) | h[3];
            hlen = 4;
        } else if (plen == 127) {
            plen = 0;
            for (int i = 2; i < 10; i++) plen = (plen << 8) | h[i];
            hlen = 10;
        }
        hlen += 4;
        frames[nframes] = (unsigned char *)h;
        frame_lens[nframes++] = hlen + plen;
        pos += hlen + plen;
    }
    if (pos != frame_len) {
        fprintf(stderr, "loadgen: %s is not a sequence of masked frames\n", frame_file);
        exit(1);
    }
}

static void close_gracefully(conn_t *conns, int n) {
    /* Close frame on each, then read until the server's FIN (at most 2 s overall). */
    for (int i = 0; i < n; i++) {
        int flags = fcntl(conns[i].fd, F_GETFL);
        fcntl(conns[i].fd, F_SETFL, flags & ~O_NONBLOCK);
        struct timeval tv = {2, 0};
        setsockopt(conns[i].fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (write(conns[i].fd, close_frame, sizeof close_frame) < 0) continue;
    }
    for (int i = 0; i < n; i++) {
        while (read(conns[i].fd, rbuf, RBUF) > 0) {
        }
        close(conns[i].fd);
    }
}

typedef struct {
    uint64_t count, rx;
    double t, cpu, server;
} mark_t;

static mark_t take_mark(void) {
    mark_t m = {count, rx_bytes, now(), own_cpu(), server_cpu()};
    return m;
}

static void print_result(mark_t a, mark_t b) {
    printf("{\"count\": %llu, \"seconds\": %.6f, \"client_cpu\": %.6f, \"server_cpu\": %.6f, "
           "\"rx_bytes\": %llu}\n",
           (unsigned long long)(b.count - a.count), b.t - a.t, b.cpu - a.cpu, b.server - a.server,
           (unsigned long long)(b.rx - a.rx));
    fflush(stdout);
}

/* The event loop for the warmup, then for the measured duration, marked at both ends. */
static void measure(void (*on_event)(struct epoll_event *), mark_t *first, mark_t *last) {
    struct epoll_event events[256];
    double start = now(), t_mark0 = start + warmup, t_end = t_mark0 + duration;
    int marked = 0;
    *first = (mark_t){0};
    for (;;) {
        double t = now();
        if (!marked && t >= t_mark0) {
            *first = take_mark();
            marked = 1;
        }
        if (t >= t_end) break;
        int timeout = (int)(((marked ? t_end : t_mark0) - t) * 1000) + 1;
        int n = epoll_wait(epfd, events, 256, timeout);
        for (int i = 0; i < n; i++) on_event(&events[i]);
    }
    *last = take_mark();
}

static void echo_event(struct epoll_event *ev) {
    conn_t *c = ev->data.ptr;
    if ((ev->events & EPOLLOUT) && c->writing) send_frame(c);
    if (ev->events & (EPOLLIN | EPOLLHUP | EPOLLERR)) echo_readable(c);
}

static void run_echo(void) {
    load_frame();
    conn_t *conns = calloc((size_t)nconns, sizeof *conns);
    epfd = epoll_create1(0);
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = blocking_open();
        fcntl(conns[i].fd, F_SETFL, fcntl(conns[i].fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(epfd, EPOLL_CTL_ADD, conns[i].fd, &ev);
    }
    for (int i = 0; i < nconns; i++) send_frame(&conns[i]);
    mark_t first, last;
    measure(echo_event, &first, &last);
    /* Let the echoes in flight come back, then close. */
    running = 0;
    in_flight = nconns;
    struct epoll_event events[256];
    double give_up = now() + 10;
    while (in_flight > 0 && now() < give_up) {
        int n = epoll_wait(epfd, events, 256, 100);
        for (int i = 0; i < n; i++) echo_event(&events[i]);
    }
    print_result(first, last);
    close_gracefully(conns, nconns);
}

/* --- handshakes -------------------------------------------------------------------------- */

static void hs_start(conn_t *c) {
    c->fd = open_socket(1);
    c->phase = 0;
    c->hs_len = 0;
    c->head_len = 0;
    c->remaining = 0;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl add");
}

static void hs_event(conn_t *c) {
    if (c->phase == 0) { /* connected: the request fits in the socket buffer */
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            errno = err;
            die("connect");
        }
        write_all(c->fd, request, request_len);
        c->phase = 1;
        arm(c, EPOLLIN);
        return;
    }
    for (;;) {
        ssize_t n = read(c->fd, rbuf, RBUF);
        if (n < 0) {
            if (errno == EAGAIN) return;
            if (errno == ECONNRESET) n = 0;
            else die("read");
        }
        if (n == 0) {
            if (c->phase < 2) {
                fprintf(stderr, "loadgen: EOF during the handshake (phase %d)\n", c->phase);
                exit(1);
            }
            epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            count++;
            hs_start(c);
            return;
        }
        const unsigned char *data = rbuf;
        size_t len = (size_t)n;
        if (c->phase == 1) {
            size_t room = sizeof c->hs - 1 - c->hs_len;
            size_t take = len < room ? len : room;
            memcpy(c->hs + c->hs_len, data, take);
            c->hs_len += take;
            c->hs[c->hs_len] = 0;
            char *end = strstr(c->hs, "\r\n\r\n");
            if (!end) continue;
            if (strncmp(c->hs, "HTTP/1.1 101", 12) != 0) {
                fprintf(stderr, "loadgen: handshake refused: %.80s\n", c->hs);
                exit(1);
            }
            size_t head = (size_t)(end + 4 - c->hs);
            size_t before = c->hs_len - take; /* bytes of hs from earlier reads */
            data += head - before;
            len -= head - before;
            c->phase = 2;
            write_all(c->fd, close_frame, sizeof close_frame);
        }
        /* phase 2: the server's close frame, then its FIN (counted above). */
        if (len) consume(c, data, len);
    }
}

static void hs_dispatch(struct epoll_event *ev) { hs_event(ev->data.ptr); }

static void run_handshake(void) {
    conn_t *conns = calloc((size_t)nconns, sizeof *conns);
    epfd = epoll_create1(0);
    for (int i = 0; i < nconns; i++) hs_start(&conns[i]);
    mark_t first, last;
    measure(hs_dispatch, &first, &last);
    print_result(first, last);
    for (int i = 0; i < nconns; i++) close(conns[i].fd);
}

static void run_idle(void) {
    conn_t *conns = calloc((size_t)nconns, sizeof *conns);
    if (frame_file) load_frame();
    for (int i = 0; i < nconns; i++) {
        conns[i].fd = blocking_open();
        if (frame) { /* one echo (of the first frame), read whole */
            write_all(conns[i].fd, frames[0], frame_lens[0]);
            int got = 0;
            while (!got) {
                ssize_t n = read(conns[i].fd, rbuf, RBUF);
                if (n <= 0) die("idle echo read");
                got = consume(&conns[i], rbuf, (size_t)n);
            }
        }
    }
    printf("{\"ready\": %d}\n", nconns);
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) {
    }
    for (int i = 0; i < nconns; i++) close(conns[i].fd);
    printf("{\"done\": %d}\n", nconns);
    fflush(stdout);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) {
            fprintf(stderr, "loadgen: bad argument %s\n", argv[i]);
            return 2;
        }
        *eq = 0;
        const char *k = argv[i], *v = eq + 1;
        if (!strcmp(k, "mode")) mode = v;
        else if (!strcmp(k, "port")) port = atoi(v);
        else if (!strcmp(k, "conns")) nconns = atoi(v);
        else if (!strcmp(k, "frame")) frame_file = v;
        else if (!strcmp(k, "warmup")) warmup = atof(v);
        else if (!strcmp(k, "duration")) duration = atof(v);
        else if (!strcmp(k, "pid")) server_pid = atoi(v);
        else if (!strcmp(k, "deflate")) deflate_offer = atoi(v);
        else {
            fprintf(stderr, "loadgen: unknown key %s\n", k);
            return 2;
        }
    }
    build_request();
    if (!strcmp(mode, "echo")) run_echo();
    else if (!strcmp(mode, "handshake")) run_handshake();
    else if (!strcmp(mode, "idle")) run_idle();
    else {
        fprintf(stderr, "loadgen: unknown mode %s\n", mode);
        return 2;
    }
    return 0;
}

/* A TCP relay that holds every chunk of bytes, in each direction, for a fixed delay before
 * passing it on: the stand-in for `tc netem delay` on kernels built without sch_netem
 * (benchmarks/shapes.py distance falls back to it). One thread, epoll, non-blocking sockets.
 *
 *   delay_relay LISTEN_IP PORT TARGET_IP TARGET_PORT DELAY_MS
 *
 * The delay is constant, so chunks fall due in the order they were read: one queue for all
 * connections. A half close is passed on after the same delay; a reset closes both sides.
 * What differs from netem: the TCP handshake itself is not delayed (the relay accepts at
 * once), so a new connection costs one round trip less than through a real distance.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct side;
struct chunk {
  struct chunk* next;     /* in the due queue */
  struct chunk* out_next; /* in the destination's backlog */
  struct side* to;
  long long due_us;
  size_t len, off;
  int eof;
  char data[];
};
struct side {
  int fd;
  struct side* peer;
  struct chunk *backlog, *backlog_tail; /* due but not yet written */
  int closed, wr_shut, rd_eof, refs;
};

static struct chunk *queue_head, *queue_tail;
static int ep;
static long long delay_us;

static long long now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static void nonblock(int fd) {
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* Sides whose last reference went, freed after the batch of events that may still name them. */
static struct side** graveyard;
static size_t graves, graves_cap;

static void release(struct side* s) {
  if (--s->refs > 0) return;
  if (graves == graves_cap) {
    graves_cap = graves_cap ? 2 * graves_cap : 256;
    graveyard = realloc(graveyard, graves_cap * sizeof *graveyard);
    if (!graveyard) abort();
  }
  graveyard[graves++] = s;
}

static void close_side(struct side* s) {
  if (s->closed) return;
  s->closed = 1;
  close(s->fd);
  while (s->backlog) {
    struct chunk* c = s->backlog;
    s->backlog = c->out_next;
    free(c);
    release(s);
  }
  release(s); /* the epoll registration's reference */
}

static void close_both(struct side* s) {
  struct side* p = s->peer;
  close_side(s);
  close_side(p);
}

/* Writes what is due to `s`, waiting for the socket when it is full. */
static void flush(struct side* s) {
  while (s->backlog && !s->closed) {
    struct chunk* c = s->backlog;
    if (c->eof) {
      shutdown(s->fd, SHUT_WR);
      s->wr_shut = 1;
    } else {
      while (c->off < c->len) {
        ssize_t n = send(s->fd, c->data + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK) {
            struct epoll_event ev = {.events = (s->rd_eof ? 0 : EPOLLIN) | EPOLLOUT, .data.ptr = s};
            epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
            return;
          }
          close_both(s);
          return;
        }
        c->off += (size_t)n;
      }
    }
    s->backlog = c->out_next;
    if (!s->backlog) s->backlog_tail = NULL;
    free(c);
    release(s);
  }
  if (!s->closed) {
    struct epoll_event ev = {.events = s->rd_eof ? 0 : EPOLLIN, .data.ptr = s};
    epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
    if (s->wr_shut && s->peer->wr_shut) close_both(s);
  }
}

static void enqueue(struct side* to, const char* data, size_t len, int eof) {
  struct chunk* c = malloc(sizeof *c + len);
  if (!c) abort();
  memcpy(c->data, data, len);
  c->len = len;
  c->off = 0;
  c->eof = eof;
  c->to = to;
  c->due_us = now_us() + delay_us;
  c->next = c->out_next = NULL;
  to->refs++;
  if (queue_tail)
    queue_tail->next = c;
  else
    queue_head = c;
  queue_tail = c;
}

static void deliver_due(void) {
  long long t = now_us();
  while (queue_head && queue_head->due_us <= t) {
    struct chunk* c = queue_head;
    queue_head = c->next;
    if (!queue_head) queue_tail = NULL;
    struct side* s = c->to;
    if (s->closed) {
      free(c);
      release(s);
      continue;
    }
    if (s->backlog_tail)
      s->backlog_tail->out_next = c;
    else
      s->backlog = c;
    s->backlog_tail = c;
    if (s->backlog == c) flush(s);
  }
}

static struct side* new_side(int fd) {
  struct side* s = calloc(1, sizeof *s);
  s->fd = fd;
  s->refs = 1;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  return s;
}

int main(int argc, char** argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s LISTEN_IP PORT TARGET_IP TARGET_PORT DELAY_MS\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  delay_us = atoll(argv[5]) * 1000;
  struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
  struct sockaddr_in ta = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[4]))};
  inet_pton(AF_INET, argv[1], &la.sin_addr);
  inet_pton(AF_INET, argv[3], &ta.sin_addr);
  int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(lfd, (struct sockaddr*)&la, sizeof la) || listen(lfd, 4096)) {
    perror("listen");
    return 1;
  }
  nonblock(lfd);
  ep = epoll_create1(0);
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
  static char buf[65536];
  struct epoll_event events[256];
  for (;;) {
    int timeout = -1;
    if (queue_head) {
      long long wait = queue_head->due_us - now_us();
      timeout = wait <= 0 ? 0 : (int)((wait + 999) / 1000);
    }
    int n = epoll_wait(ep, events, 256, timeout);
    for (int i = 0; i < n; ++i) {
      struct side* s = events[i].data.ptr;
      if (!s) {
        int cfd;
        while ((cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          int ufd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
          setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          if (connect(ufd, (struct sockaddr*)&ta, sizeof ta) < 0 && errno != EINPROGRESS) {
            close(cfd);
            close(ufd);
            continue;
          }
          struct side *a = new_side(cfd), *b = new_side(ufd);
          a->peer = b;
          b->peer = a;
        }
        continue;
      }
      if (s->closed) continue;
      if (events[i].events & EPOLLOUT) flush(s);
      if (s->closed || !(events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) || s->rd_eof) continue;
      for (;;) {
        ssize_t r = recv(s->fd, buf, sizeof buf, 0);
        if (r > 0) {
          enqueue(s->peer, buf, (size_t)r, 0);
          continue;
        }
        if (r == 0) {
          s->rd_eof = 1;
          enqueue(s->peer, NULL, 0, 1);
          struct epoll_event ev = {.events = s->backlog ? EPOLLOUT : 0, .data.ptr = s};
          epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
          close_both(s);
        }
        break;
      }
    }
    deliver_due();
    for (size_t i = 0; i < graves; ++i) free(graveyard[i]);
    graves = 0;
  }
}

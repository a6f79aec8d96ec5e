/* Minimal accept-all NFQUEUE listener, the reference point of benches/e2e.sh:
 * what the kernel queue allows with one receive and one verdict per packet
 * (libnetfilter_queue, same queue settings as appwall: GSO, copy 64 KiB,
 * max length 4096, 8 MiB receive buffer, fail-closed). Runs until SIGTERM.
 * Usage: e2e_nfq_accept QUEUE [gso|nogso [MAXLEN RCVBUF]]; "nogso" leaves the GSO
 * flag off, so the kernel segments every GSO packet before queueing it (the
 * cost GSO saves); MAXLEN and RCVBUF replace 4096 and 8 MiB (the verdict
 * ceiling measurement queues a large backlog).
 * Build: cc -O2 -o e2e_nfq_accept e2e_nfq_accept.c -lnetfilter_queue */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static int cb(struct nfq_q_handle *qh, struct nfgenmsg *m, struct nfq_data *d, void *x) {
    (void)m; (void)x;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(d);
    return nfq_set_verdict(qh, ph ? ntohl(ph->packet_id) : 0, NF_ACCEPT, 0, NULL);
}

int main(int argc, char **argv) {
    int qnum = argc > 1 ? atoi(argv[1]) : 0;
    static char buf[65536 + 4096] __attribute__((aligned));
    struct sigaction sa = {0};
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    struct nfq_handle *h = nfq_open();
    if (!h) { perror("nfq_open"); return 1; }
    struct nfq_q_handle *qh = nfq_create_queue(h, qnum, cb, NULL);
    if (!qh) { perror("nfq_create_queue"); return 1; }
    if (nfq_set_mode(qh, NFQNL_COPY_PACKET, 0xffff) < 0) { perror("mode"); return 1; }
    nfq_set_queue_maxlen(qh, argc > 3 ? (unsigned)atoi(argv[3]) : 4096);
    int gso = !(argc > 2 && strcmp(argv[2], "nogso") == 0);
    nfq_set_queue_flags(qh, NFQA_CFG_F_GSO, gso ? NFQA_CFG_F_GSO : 0);
    int fd = nfq_fd(h);
    int rcv = argc > 4 ? atoi(argv[4]) : 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof rcv);
    struct timeval tv = {0, 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    fprintf(stderr, "e2e_nfq_accept: queue %d bound (GSO %s)\n", qnum, gso ? "on" : "off");
    while (!stop) {
        int n = recv(fd, buf, sizeof buf, 0);
        if (n >= 0) nfq_handle_packet(h, buf, n);
        else if (errno != EAGAIN && errno != EINTR && errno != ENOBUFS) { perror("recv"); break; }
    }
    nfq_destroy_queue(qh);
    nfq_close(h);
    return 0;
}

// The simulation bridge: a Verilator model of the accelerator behind its link, exposed as a TCP
// port or a pty so the unchanged host runtime (pyserial) talks to it as to a board.
//
//   bridge --tcp PORT | --pty  --cycles-per-byte C                 (byte streams)
//   bridge --tcp PORT | --pty  --cycles-per-bit C [--host-skew S]  (built with -DPINS)
//
// Prints "LISTEN socket://127.0.0.1:PORT" (or "LISTEN /dev/pts/N") on stdout, then serves one
// client at a time. Bytes cross the link at the configured line rate in simulated time: either
// one byte per C cycles each way on the design's rx/tx byte streams, or (PINS: the design is the
// board's UART top) as 8N1 bit levels on its rx pin, C cycles per bit (times 1 + S: the host
// adapter's clock error), with its tx pin decoded by sampling each bit in its middle. While the
// design reports idle and no byte is waiting the bridge blocks in poll(), so simulated time
// stands still until the host speaks. A client that disconnects mid-frame leaves the design to recover on its own (its
// inter-byte timeout); the next client is served.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <string>
#include <vector>

#include "verilated.h"
#include "Vdyad_top.h"     // the design, always converted under this name
// (Verilator spells the stream ports rx__valid ... as rx___05Fvalid ...)

static Vdyad_top* top;

static void tick() {
    top->clk = 0;
    top->eval();
    top->clk = 1;
    top->eval();
}

#ifdef PINS
// The host adapter's UART: sends queued bytes back to back on one bit grid.
struct LineOut {
    double bit = 16;            // cycles per bit
    bool busy = false;
    double start = 0, end = -1e18;
    uint16_t frame = 0;

    int level(uint64_t cyc, std::deque<uint8_t>& q) {
        if (busy && cyc >= end) busy = false;
        if (!busy && !q.empty()) {
            start = (cyc - end < 1) ? end : (double)cyc;     // back to back: keep the grid
            end = start + 10 * bit;
            frame = (1u << 9) | (q.front() << 1);
            q.pop_front();
            busy = true;
        }
        if (!busy) return 1;
        int k = (int)((cyc - start) / bit);
        return k >= 10 ? 1 : (frame >> k) & 1;
    }
};

// The host adapter's receiver: start edge, then each bit sampled in its middle.
struct LineIn {
    double bit = 16;
    bool busy = false, prev = true;
    double start = 0;
    int k = 0;
    uint16_t frame = 0;
    uint64_t frame_errors = 0;

    void sample(uint64_t cyc, bool line, std::vector<uint8_t>& out) {
        if (!busy) {
            if (prev && !line) {
                busy = true;
                start = cyc;
                k = 0;
                frame = 0;
            }
        } else if (cyc >= start + (k + 0.5) * bit) {
            frame |= (uint16_t)line << k;
            if (++k == 10) {
                busy = false;
                if ((frame & 1) == 0 && (frame >> 9) == 1) out.push_back((frame >> 1) & 0xFF);
                else if (++frame_errors <= 10) fprintf(stderr, "bridge: framing error\n");
            }
        }
        prev = line;
    }
};
#endif

static void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

// One side of the host connection: a TCP listener + client, or a pty master.
struct Port {
    bool pty = false;
    int listen_fd = -1, fd = -1;
    bool hup = false;           // pty: no slave open

    void open_tcp(int port) {
        listen_fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port = htons(port);
        if (bind(listen_fd, (sockaddr*)&addr, sizeof addr) || listen(listen_fd, 1)) {
            perror("bridge: bind/listen");
            exit(2);
        }
        socklen_t len = sizeof addr;
        getsockname(listen_fd, (sockaddr*)&addr, &len);
        printf("LISTEN socket://127.0.0.1:%d\n", ntohs(addr.sin_port));
        fflush(stdout);
    }

    void open_pty() {
        pty = true;
        fd = posix_openpt(O_RDWR | O_NOCTTY);
        if (fd < 0 || grantpt(fd) || unlockpt(fd)) {
            perror("bridge: pty");
            exit(2);
        }
        termios t;
        tcgetattr(fd, &t);
        cfmakeraw(&t);
        tcsetattr(fd, TCSANOW, &t);
        set_nonblocking(fd);
        printf("LISTEN %s\n", ptsname(fd));
        fflush(stdout);
    }

    bool connected() const { return fd >= 0 && !hup; }

    void accept_client() {
        int c = accept(listen_fd, nullptr, nullptr);
        if (c < 0) return;
        int one = 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        set_nonblocking(c);
        fd = c;
    }

    void drop() {
        if (pty) {
            hup = true;
        } else {
            close(fd);
            fd = -1;
        }
    }

    // Wait up to `ms` (-1: forever) for something to do; accepts a waiting client.
    void wait(int ms) {
        pollfd p[2];
        int n = 0;
        if (!pty && fd < 0) p[n++] = {listen_fd, POLLIN, 0};
        if (fd >= 0) p[n++] = {fd, POLLIN, 0};
        if (pty && hup) ms = (ms < 0 || ms > 10) ? 10 : ms;  // a pty reports HUP until reopened
        int r = poll(p, n, ms);
        if (r <= 0) return;
        for (int i = 0; i < n; i++) {
            if (p[i].fd == listen_fd && (p[i].revents & POLLIN)) accept_client();
            if (p[i].fd == fd && pty && hup && (p[i].revents & POLLIN)) hup = false;
        }
    }

    // Move whatever the host sent into `q`.
    void receive(std::deque<uint8_t>& q) {
        if (fd < 0) return;
        uint8_t buf[65536];
        for (;;) {
            ssize_t n = read(fd, buf, sizeof buf);
            if (n > 0) {
                hup = false;
                q.insert(q.end(), buf, buf + n);
                continue;
            }
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                if (!hup) {
                    q.clear();
                    drop();
                }
            }
            return;
        }
    }

    void send(std::vector<uint8_t>& out) {
        if (out.empty()) return;
        if (!connected()) {     // nobody listening: the bytes are gone, as on a wire
            out.clear();
            return;
        }
        size_t off = 0;
        while (off < out.size()) {
            ssize_t n = write(fd, out.data() + off, out.size() - off);
            if (n > 0) {
                off += n;
            } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                pollfd p{fd, POLLOUT, 0};
                poll(&p, 1, 100);
            } else {
                drop();
                break;
            }
        }
        out.clear();
    }
};

int main(int argc, char** argv) {
    Verilated::commandArgs(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    int tcp_port = -1;
    bool use_pty = false;
    double cpb = 10;    // cycles per byte (streams) or per bit (PINS)
    double skew = 0;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--tcp" && i + 1 < argc) tcp_port = atoi(argv[++i]);
        else if (a == "--pty") use_pty = true;
        else if ((a == "--cycles-per-byte" || a == "--cycles-per-bit") && i + 1 < argc)
            cpb = atof(argv[++i]);
        else if (a == "--host-skew" && i + 1 < argc) skew = atof(argv[++i]);
    }
    if ((tcp_port < 0) == !use_pty || cpb < 1) {
        fprintf(stderr, "usage: bridge (--tcp PORT | --pty) --cycles-per-byte C | "
                        "--cycles-per-bit C [--host-skew S]\n");
        return 2;
    }
    top = new Vdyad_top;
    top->rst = 1;
    for (int i = 0; i < 4; i++) tick();
    top->rst = 0;

    Port port;
    if (use_pty) port.open_pty(); else port.open_tcp(tcp_port);

    std::deque<uint8_t> rxq;
    std::vector<uint8_t> txq;
    int since_io = 0;
#ifdef PINS
    LineOut line_out;
    LineIn line_in;
    line_out.bit = line_in.bit = cpb * (1 + skew);
    // the design's receiver finishes a byte up to a few cycles after the host's stop bit: block
    // only once everything has been quiet for a few bit times
    const int settle = (int)(4 * cpb) + 8;
    int quiet = 0;
    uint64_t cyc = 0;

    for (;;) {
        bool calm = top->idle && rxq.empty() && !line_out.busy && !line_in.busy;
        quiet = calm ? quiet + 1 : 0;
        if (quiet > settle) {
            port.send(txq);
            port.wait(-1);
            port.receive(rxq);
            since_io = 0;
            quiet = 0;
        } else if (++since_io >= 256) {
            since_io = 0;
            port.send(txq);
            port.wait(0);
            port.receive(rxq);
        }
        top->rx = line_out.level(cyc, rxq);
        tick();
        line_in.sample(cyc, top->tx, txq);
        cyc++;
    }
#else
    double rx_credit = 1, tx_credit = 1;
    const double per_cycle = 1.0 / cpb;

    for (;;) {
        // ---- host I/O: every 256 cycles, or block while nothing can happen -------------------
        if (top->idle && rxq.empty()) {
            port.send(txq);
            port.wait(-1);
            port.receive(rxq);
            since_io = 0;
        } else if (++since_io >= 256) {
            since_io = 0;
            port.send(txq);
            port.wait(0);
            port.receive(rxq);
        }

        // ---- one cycle ------------------------------------------------------------------------
        top->clk = 0;
        rx_credit = rx_credit + per_cycle > 1 ? 1 : rx_credit + per_cycle;
        tx_credit = tx_credit + per_cycle > 1 ? 1 : tx_credit + per_cycle;
        bool offer = rx_credit >= 1 && !rxq.empty();
        top->rx___05Fvalid = offer;
        top->rx___05Fpayload = offer ? rxq.front() : 0;
        top->tx___05Fready = tx_credit >= 1;
        top->eval();
        if (offer && top->rx___05Fready) {
            rxq.pop_front();
            rx_credit -= 1;
        }
        if (top->tx___05Fvalid && top->tx___05Fready) {
            txq.push_back(top->tx___05Fpayload);
            tx_credit -= 1;
        }
        top->clk = 1;
        top->eval();
    }
#endif
}

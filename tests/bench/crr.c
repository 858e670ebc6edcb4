/*
 * TCP connect/request/response/close (CRR) load for bench_policy.py: the rate of new
 * connections is where policy cost shows, because a new connection is where a
 * datapath (or an iptables chain) decides.
 *
 *   crr server ADDR PORT NPORTS
 *       listen on PORT..PORT+NPORTS-1; for each connection read 1 byte, answer 1 byte,
 *       close (the server closes first, so its side holds TIME_WAIT, not the client's).
 *   crr client SRC DST PORT NPORTS SECONDS LPORT_LO LPORT_HI
 *       for SECONDS: bind SRC to the next local port of [LO, HI], connect to the next
 *       server port, send 1 byte, read the answer and the close, close. Prints
 *       "connections N seconds S errors E p50_us X p99_us Y".
 *
 * Ports rotate over NPORTS x (HI - LO + 1) tuples so that a tuple is not reused within
 * a run of a few seconds. Written for this benchmark (netperf is not in Debian).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PORTS 16
#define MAX_SAMPLES 2000000

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int server(const char *addr, int port, int nports)
{
	struct pollfd fds[MAX_PORTS];
	int one = 1;

	for (int i = 0; i < nports; i++) {
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port + i) };
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		inet_pton(AF_INET, addr, &sa.sin_addr);
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 1024)) {
			perror("bind/listen");
			return 1;
		}
		fds[i].fd = fd;
		fds[i].events = POLLIN;
	}
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		if (poll(fds, nports, -1) < 0 && errno != EINTR)
			return 1;
		for (int i = 0; i < nports; i++) {
			char c;
			int c_fd;

			if (!(fds[i].revents & POLLIN))
				continue;
			c_fd = accept(fds[i].fd, NULL, NULL);
			if (c_fd < 0)
				continue;
			if (read(c_fd, &c, 1) == 1)
				(void)!write(c_fd, &c, 1);
			close(c_fd);
		}
	}
}

static int client(const char *src, const char *dst, int port, int nports, double seconds,
		  int lo, int hi)
{
	struct sockaddr_in local = { .sin_family = AF_INET };
	struct sockaddr_in remote = { .sin_family = AF_INET };
	static double samples[MAX_SAMPLES];
	long done = 0, errors = 0;
	int lport = lo, pidx = 0, one = 1;
	double start, end;

	inet_pton(AF_INET, src, &local.sin_addr);
	inet_pton(AF_INET, dst, &remote.sin_addr);
	start = now_s();
	end = start + seconds;
	while (now_s() < end) {
		double t0 = now_s();
		char c = 'x';
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		int ok = 0;

		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		local.sin_port = htons(lport);
		remote.sin_port = htons(port + pidx);
		lport = lport == hi ? lo : lport + 1;
		pidx = (pidx + 1) % nports;
		if (bind(fd, (struct sockaddr *)&local, sizeof(local)) == 0 &&
		    connect(fd, (struct sockaddr *)&remote, sizeof(remote)) == 0 &&
		    write(fd, &c, 1) == 1 && read(fd, &c, 1) == 1 && read(fd, &c, 1) == 0)
			ok = 1;
		close(fd);
		if (!ok) {
			errors++;
			continue;
		}
		if (done < MAX_SAMPLES)
			samples[done] = (now_s() - t0) * 1e6;
		done++;
	}
	seconds = now_s() - start;
	{
		long n = done < MAX_SAMPLES ? done : MAX_SAMPLES;
		double p50 = 0, p99 = 0;

		if (n > 0) {
			qsort(samples, n, sizeof(double), cmp_double);
			p50 = samples[n / 2];
			p99 = samples[(long)(n * 0.99)];
		}
		printf("connections %ld seconds %.3f errors %ld p50_us %.1f p99_us %.1f\n",
		       done, seconds, errors, p50, p99);
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "server")) {
		int nports = atoi(argv[4]);

		if (nports < 1 || nports > MAX_PORTS)
			return 2;
		return server(argv[2], atoi(argv[3]), nports);
	}
	if (argc == 9 && !strcmp(argv[1], "client")) {
		int nports = atoi(argv[5]);

		if (nports < 1 || nports > MAX_PORTS)
			return 2;
		return client(argv[2], argv[3], atoi(argv[4]), nports, atof(argv[6]),
			      atoi(argv[7]), atoi(argv[8]));
	}
	fprintf(stderr, "usage: crr server ADDR PORT NPORTS | "
		"crr client SRC DST PORT NPORTS SECONDS LPORT_LO LPORT_HI\n");
	return 2;
}

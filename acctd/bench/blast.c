/* blast.c - the live benchmark's traffic generator (acctd/bench/live.py
 * compiles it at bench time; Python sends too slowly to load a program).
 *
 *   blast IFNAME NFLOWS NADDRS SECONDS
 *
 * Sends 60-byte Ethernet/IPv4/UDP frames out of IFNAME through an AF_PACKET
 * socket that bypasses the qdisc, 256 to a sendmmsg() call, for SECONDS.
 * Frame i comes from local address 10.8.<a>, a = i % NADDRS, UDP source
 * port 1024 + i / NADDRS, to 192.0.2.1:53: NFLOWS distinct flows over NADDRS
 * addresses, consecutive frames from different addresses, as on a busy
 * link. The destination MAC is nobody's, so the receiver's stack drops the
 * frame early (after the hooks). Prints "SENT DROPPED": frames the socket
 * took, and how many of them the interface dropped (its tx_dropped: a veth
 * whose peer's queue was full), so SENT - DROPPED reached the peer.
 *
 *   blast chase BYTES
 *
 * Prints the ns of one dependent load at random over BYTES of memory: what
 * a cache (and TLB) miss costs on this machine at this moment, the floor
 * under every hash lookup of a large table. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define FRAME 60
#define BATCH 256

static unsigned long long tx_dropped(const char *ifname)
{
	char path[128];
	unsigned long long v = 0;
	snprintf(path, sizeof(path), "/sys/class/net/%s/statistics/tx_dropped", ifname);
	FILE *f = fopen(path, "r");
	if (f) {
		if (fscanf(f, "%llu", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v;
}

static uint16_t csum(const uint8_t *p, int len)
{
	uint32_t s = 0;
	for (int i = 0; i < len; i += 2)
		s += (p[i] << 8) | p[i + 1];
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return ~s;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int chase(size_t bytes)
{
	size_t n = bytes / 64, *a = malloc(n * 64), *perm = malloc(n * sizeof(size_t));
	if (!a || !perm || n < 2)
		return 1;
	for (size_t i = 0; i < n; i++)
		perm[i] = i;
	srandom(1);
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = (((size_t)random() << 31) | random()) % (i + 1), t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	/* one cycle through every line, in random order */
	for (size_t i = 0; i < n; i++)
		a[perm[i] * 8] = perm[(i + 1) % n] * 8;
	size_t p = 0;
	long loads = 4000000;
	double t = now();
	for (long i = 0; i < loads; i++)
		p = a[p];
	printf("%.1f %zu\n", (now() - t) * 1e9 / loads, p & 1);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "chase"))
		return chase(strtoull(argv[2], NULL, 0));
	if (argc != 5) {
		fprintf(stderr, "usage: blast IFNAME NFLOWS NADDRS SECONDS\n");
		return 2;
	}
	const char *ifname = argv[1];
	unsigned nflows = strtoul(argv[2], NULL, 0), naddrs = strtoul(argv[3], NULL, 0);
	double seconds = strtod(argv[4], NULL);
	if (!nflows || !naddrs || naddrs > 65536 || nflows / naddrs > 60000) {
		fprintf(stderr, "blast: bad NFLOWS/NADDRS\n");
		return 2;
	}
	unsigned ifindex = if_nametoindex(ifname);
	if (!ifindex) {
		perror(ifname);
		return 1;
	}
	int fd = socket(AF_PACKET, SOCK_RAW, 0);
	if (fd < 0) {
		perror("socket");
		return 1;
	}
	int one = 1;
	setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
	struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_ifindex = ifindex,
				  .sll_protocol = htons(ETH_P_IP)};
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
		perror("bind");
		return 1;
	}

	uint8_t *frames = calloc(nflows, FRAME);
	if (!frames)
		return 1;
	static const uint8_t head[34] = {
		0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00,
		0x45, 0, 0, 46, 0, 0, 0, 0, 64, 17, 0, 0, 10, 8, 0, 0, 192, 0, 2, 1};
	for (unsigned i = 0; i < nflows; i++) {
		uint8_t *f = frames + (size_t)i * FRAME;
		unsigned a = i % naddrs, port = 1024 + i / naddrs;
		memcpy(f, head, sizeof(head));
		f[28] = a >> 8;
		f[29] = a & 0xff;
		uint16_t c = csum(f + 14, 20);
		f[24] = c >> 8;
		f[25] = c & 0xff;
		f[34] = port >> 8;
		f[35] = port & 0xff;
		f[36] = 0;
		f[37] = 53;
		f[38] = 0;
		f[39] = 26;	/* UDP length; checksum 0: none */
	}

	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	memset(msgs, 0, sizeof(msgs));
	for (int j = 0; j < BATCH; j++) {
		msgs[j].msg_hdr.msg_iov = &iov[j];
		msgs[j].msg_hdr.msg_iovlen = 1;
		iov[j].iov_len = FRAME;
	}
	unsigned long long sent = 0, drop0 = tx_dropped(ifname);
	unsigned next = 0;
	double end = now() + seconds;
	while (now() < end) {
		for (int j = 0; j < BATCH; j++) {
			iov[j].iov_base = frames + (size_t)next * FRAME;
			next = next + 1 == nflows ? 0 : next + 1;
		}
		int n = sendmmsg(fd, msgs, BATCH, 0);
		if (n < 0) {
			perror("sendmmsg");
			return 1;
		}
		sent += n;
		/* frames the socket did not take are sent again next round */
		next = (next + nflows - (BATCH - n) % nflows) % nflows;
	}
	printf("%llu %llu\n", sent, tx_dropped(ifname) - drop0);
	return 0;
}

/*
 * lat_mem_rd - memory read latency by pointer chasing, the measurement of LMbench's lat_mem_rd.
 *
 * usage: lat_mem_rd [-r] [-a] [-s STRIDE] [-l LOADS] SIZE_MB
 *   -r         random order (a random cyclic permutation of the STRIDE-sized slots: TLB and cache
 *              misses on every load, like the study's "random" column); default sequential
 *   -a         also measure every power-of-two size from 4 KB up to SIZE_MB (LMbench's curve)
 *   -s STRIDE  bytes between loads (default 64)
 *   -l LOADS   dependent loads timed per size (default: max(slots, 4M))
 *
 * Output: LMbench-style "SIZE_MB LATENCY_NS" lines, then one summary line
 *   lat_mem_rd pattern=seq size_mb=256 stride=64 loads=4194304 latency_ns=95.60
 * Plain C99 + POSIX, so any (cross) compiler builds it: cc -O2 -o lat_mem_rd lat_mem_rd.c
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t rng_state = 88172645463325252ULL;

static uint64_t xorshift(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Link the slots of buf into one cycle, in order or shuffled; returns the first slot. */
static void **build_chain(char *buf, size_t slots, size_t stride, int random)
{
	size_t *order = malloc(slots * sizeof(*order));
	size_t i, first;

	if (!order) {
		perror("malloc");
		exit(1);
	}
	for (i = 0; i < slots; i++)
		order[i] = i;
	if (random) {
		for (i = slots - 1; i > 0; i--) {
			size_t j = (size_t)(xorshift() % (i + 1));
			size_t t = order[i];
			order[i] = order[j];
			order[j] = t;
		}
	}
	for (i = 0; i < slots; i++)
		*(void **)(buf + order[i] * stride) = buf + order[(i + 1) % slots] * stride;
	first = order[0];
	free(order);
	return (void **)(buf + first * stride);
}

#define HOP p = (void **)*p;
#define HOP16 HOP HOP HOP HOP HOP HOP HOP HOP HOP HOP HOP HOP HOP HOP HOP HOP

/* Average ns per dependent load over `loads` loads (one warm-up pass first). */
static double chase(void **start, size_t slots, size_t loads)
{
	void **volatile sink;
	void **p = start;
	size_t i;
	double t0, t1;

	for (i = 0; i < slots; i++)
		HOP
	loads = (loads + 15) / 16 * 16;
	t0 = now_ns();
	for (i = 0; i < loads; i += 16) {
		HOP16
	}
	t1 = now_ns();
	sink = p;
	(void)sink;
	return (t1 - t0) / (double)loads;
}

static double measure(char *buf, size_t bytes, size_t stride, int random, size_t loads)
{
	size_t slots = bytes / stride;
	void **start;

	if (slots < 2)
		slots = 2;
	start = build_chain(buf, slots, stride, random);
	if (loads == 0)
		loads = slots > (4u << 20) ? slots : (4u << 20);
	return chase(start, slots, loads);
}

static void usage(void)
{
	fprintf(stderr, "usage: lat_mem_rd [-r] [-a] [-s STRIDE] [-l LOADS] SIZE_MB\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int opt, random = 0, all = 0;
	size_t stride = 64, loads = 0, bytes, size;
	double size_mb, ns = 0;
	char *buf;

	while ((opt = getopt(argc, argv, "ras:l:")) != -1) {
		switch (opt) {
		case 'r': random = 1; break;
		case 'a': all = 1; break;
		case 's': stride = (size_t)strtoul(optarg, NULL, 0); break;
		case 'l': loads = (size_t)strtoul(optarg, NULL, 0); break;
		default: usage();
		}
	}
	if (optind != argc - 1 || stride < sizeof(void *) || stride % sizeof(void *))
		usage();
	size_mb = atof(argv[optind]);
	bytes = (size_t)(size_mb * 1024 * 1024);
	if (bytes < 2 * stride)
		usage();
	buf = malloc(bytes);
	if (!buf) {
		perror("malloc");
		return 1;
	}
	memset(buf, 1, bytes);
	for (size = all ? 4096 : bytes; size <= bytes; size *= 2) {
		ns = measure(buf, size, stride, random, loads);
		printf("%.5f %.3f\n", (double)size / (1024 * 1024), ns);
		fflush(stdout);
		if (size == bytes)
			break;
		if (size * 2 > bytes)
			size = bytes / 2;
	}
	printf("lat_mem_rd pattern=%s size_mb=%g stride=%zu latency_ns=%.2f\n",
	       random ? "random" : "seq", size_mb, stride, ns);
	free(buf);
	return 0;
}

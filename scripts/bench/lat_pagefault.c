/*
 * lat_pagefault - page-fault latency, the measurement of LMbench's lat_pagefault.
 *
 * usage: lat_pagefault [-a] [-n REPS] [-s SIZE_MB] FILE
 *   default: FILE (created and filled to SIZE_MB when shorter, default 64) is mapped read-only
 *            REPS times (default 5); every page is touched once per mapping, so each touch is
 *            a minor fault on a page-cache page (LMbench maps a file the same way)
 *   -a       anonymous memory instead: every first write is a zero-fill fault (FILE ignored)
 *
 * The time is divided by the faults the kernel counted (getrusage minflt), so fault-around
 * (several pages mapped per fault) does not skew it. Output (LMbench's line, then a summary):
 *   Pagefaults on FILE: 0.4512 microseconds
 *   lat_pagefault kind=file pages=16384 faults=81920 us_per_fault=0.4512
 * Plain C99 + POSIX: cc -O2 -o lat_pagefault lat_pagefault.c
 */
#define _DEFAULT_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static long minflt(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_minflt;
}

static int prepare_file(const char *path, size_t bytes)
{
	struct stat st;
	char block[65536];
	size_t done;
	int fd = open(path, O_RDWR | O_CREAT, 0600);

	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(path);
		exit(1);
	}
	if ((size_t)st.st_size < bytes) {
		memset(block, 0x5a, sizeof(block));
		for (done = 0; done < bytes; done += sizeof(block)) {
			if (write(fd, block, sizeof(block)) != (ssize_t)sizeof(block)) {
				perror(path);
				exit(1);
			}
		}
	}
	return fd;
}

/* One mapping: touch every page; returns faults taken, adds the time to *us. */
static long one_pass(int fd, size_t bytes, size_t page, int anon, double *us)
{
	volatile char sum = 0;
	char *p;
	size_t off;
	long f0;
	double t0;

	if (anon)
		p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	else
		p = mmap(NULL, bytes, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	f0 = minflt();
	t0 = now_us();
	for (off = 0; off < bytes; off += page) {
		if (anon)
			p[off] = 1;
		else
			sum += p[off];
	}
	*us += now_us() - t0;
	f0 = minflt() - f0;
	munmap(p, bytes);
	(void)sum;
	return f0;
}

int main(int argc, char **argv)
{
	int opt, anon = 0, reps = 5, fd = -1, i;
	double size_mb = 64, us = 0, per;
	size_t page = (size_t)sysconf(_SC_PAGESIZE), bytes;
	long faults = 0;
	const char *path = "anonymous memory";

	while ((opt = getopt(argc, argv, "an:s:")) != -1) {
		switch (opt) {
		case 'a': anon = 1; break;
		case 'n': reps = atoi(optarg); break;
		case 's': size_mb = atof(optarg); break;
		default:
			fprintf(stderr, "usage: lat_pagefault [-a] [-n REPS] [-s SIZE_MB] FILE\n");
			return 2;
		}
	}
	bytes = ((size_t)(size_mb * 1024 * 1024) + page - 1) / page * page;
	if (!anon) {
		if (optind != argc - 1) {
			fprintf(stderr, "usage: lat_pagefault [-a] [-n REPS] [-s SIZE_MB] FILE\n");
			return 2;
		}
		path = argv[optind];
		fd = prepare_file(path, bytes);
		one_pass(fd, bytes, page, 0, &us); /* warm the page cache */
		us = 0;
	}
	for (i = 0; i < reps; i++)
		faults += one_pass(fd, bytes, page, anon, &us);
	per = faults > 0 ? us / (double)faults : 0.0;
	printf("Pagefaults on %s: %.4f microseconds\n", path, per);
	printf("lat_pagefault kind=%s pages=%zu faults=%ld us_per_fault=%.4f\n",
	       anon ? "anon" : "file", bytes / page, faults, per);
	if (fd >= 0)
		close(fd);
	return 0;
}

/*
 * Read bandwidth of main memory, the bound for token generation: each
 * generated token streams every weight once, so tokens/s can be at most
 * bandwidth / weight bytes per token.
 *
 *   cc -O3 -march=native -pthread -o membw bench/membw.c
 *   ./membw [THREADS] [MIB] [ITERS]        (defaults: 1 thread, 1024 MiB, 10)
 *
 * The buffer (1 GiB by default, far larger than any cache) is split into one
 * contiguous slice per thread; each thread first writes its slice (so its
 * pages are faulted in before timing), then every iteration sums its slice as
 * 64-bit integers, which the compiler vectorizes into plain wide loads, the
 * same access pattern as a matrix-vector product over weights. The threads
 * meet at a barrier before and after each iteration and the wall time between
 * the two barriers is timed, so the figure is the aggregate rate of all
 * threads. Prints JSON with the best and median rate in GB/s (1e9 bytes/s).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct worker {
    pthread_t tid;
    const uint64_t *lo;
    size_t n;
    uint64_t sum;
};

static pthread_barrier_t barrier;
static int iters;
static double *times;
/* Keeps the sums observable so the loads are not optimized away. */
static volatile uint64_t sink;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t sum_slice(const uint64_t *p, size_t n)
{
    /* Four independent accumulators keep enough loads in flight. */
    uint64_t a = 0, b = 0, c = 0, d = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a += p[i];
        b += p[i + 1];
        c += p[i + 2];
        d += p[i + 3];
    }
    for (; i < n; i++)
        a += p[i];
    return a + b + c + d;
}

static void *run(void *arg)
{
    struct worker *w = arg;
    memset((void *)w->lo, 1, w->n * sizeof(uint64_t));
    for (int it = 0; it < iters; it++) {
        pthread_barrier_wait(&barrier);
        w->sum += sum_slice(w->lo, w->n);
        pthread_barrier_wait(&barrier);
    }
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    long mib = argc > 2 ? atol(argv[2]) : 1024;
    iters = argc > 3 ? atoi(argv[3]) : 10;
    if (threads < 1 || threads > 256 || mib < 1 || iters < 1) {
        fprintf(stderr, "usage: membw [THREADS 1..256] [MIB >= 1] [ITERS >= 1]\n");
        return 2;
    }
    size_t bytes = (size_t)mib << 20;
    size_t words = bytes / sizeof(uint64_t);
    uint64_t *buf = aligned_alloc(4096, bytes);
    struct worker *ws = calloc((size_t)threads, sizeof *ws);
    times = calloc((size_t)iters, sizeof *times);
    if (!buf || !ws || !times) {
        fprintf(stderr, "membw: out of memory for %ld MiB\n", mib);
        return 1;
    }
    pthread_barrier_init(&barrier, NULL, (unsigned)threads + 1);
    size_t per = words / (size_t)threads;
    for (int t = 0; t < threads; t++) {
        ws[t].lo = buf + (size_t)t * per;
        ws[t].n = t == threads - 1 ? words - (size_t)t * per : per;
        if (pthread_create(&ws[t].tid, NULL, run, &ws[t]) != 0) {
            fprintf(stderr, "membw: pthread_create failed\n");
            return 1;
        }
    }
    /* The main thread only keeps time: it joins both barriers of each
     * iteration, so the interval covers all workers' reads. */
    for (int it = 0; it < iters; it++) {
        pthread_barrier_wait(&barrier);
        double t0 = now();
        pthread_barrier_wait(&barrier);
        times[it] = now() - t0;
    }
    uint64_t total = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(ws[t].tid, NULL);
        total += ws[t].sum;
    }
    sink = total;
    qsort(times, (size_t)iters, sizeof *times, cmp);
    double best = (double)bytes / times[0] / 1e9;
    double median = (double)bytes / times[iters / 2] / 1e9;
    printf("{\"threads\": %d, \"bytes\": %zu, \"iters\": %d, \"best_gbs\": %.3f, \"median_gbs\": %.3f}\n",
           threads, bytes, iters, best, median);
    free(times);
    free(ws);
    free(buf);
    return 0;
}

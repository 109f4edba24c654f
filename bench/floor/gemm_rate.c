/* The machine's matrix-product rate, for the floors of `bench/run.sh --scaling`: a large square
 * product (n x n by n x n, 2048 by default) on OpenBLAS with a given number of threads (2 by
 * default: the two cores the trainer may use), in float32 (sgemm) and float64 (dgemm), the best
 * of 3 timed runs each (the two precisions in turn) after one untimed warm-up.
 *
 * Build: cc -O2 -o gemm_rate gemm_rate.c -lopenblas     Run: ./gemm_rate [n] [threads]
 * Prints `sgemm_gflops=... dgemm_gflops=... n=... threads=...`. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

extern void openblas_set_num_threads(int);

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* n x n operands filled with values in [-0.5, 0.5], as float or double. */
static void *filled(size_t count, int dbl, double sign) {
    char *p = malloc(count * (dbl ? sizeof(double) : sizeof(float)));
    for (size_t i = 0; i < count; i++) {
        double v = sign * ((double)rand() / RAND_MAX - 0.5);
        if (dbl) ((double *)p)[i] = v; else ((float *)p)[i] = (float)v;
    }
    return p;
}

/* Seconds for one n^3 product. */
static double timed(int n, int dbl, void *a, void *b, void *c) {
    double t0 = now();
    if (dbl) cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, a, n, b, n, 0.0, c, n);
    else cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    return now() - t0;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 2048, threads = argc > 2 ? atoi(argv[2]) : 2;
    size_t count = (size_t)n * n;
    openblas_set_num_threads(threads);
    void *op[2][3];
    for (int d = 0; d < 2; d++) {
        op[d][0] = filled(count, d, 1); op[d][1] = filled(count, d, -1); op[d][2] = filled(count, d, 0);
    }
    /* Run 0 warms up (threads, pages, caches); then 3 timed runs of each precision, taken in
     * turn, so that a burst of other work on a shared machine does not spoil one of them only. */
    double best[2] = {1e30, 1e30};
    for (int run = 0; run < 4; run++)
        for (int d = 0; d < 2; d++) {
            double t = timed(n, d, op[d][0], op[d][1], op[d][2]);
            if (run > 0 && t < best[d]) best[d] = t;
        }
    double flops = 2.0 * n * n * (double)n / 1e9;
    printf("sgemm_gflops=%.1f dgemm_gflops=%.1f n=%d threads=%d\n", flops / best[0], flops / best[1], n, threads);
    return 0;
}

/* The floor of the book's recipe: the matrix products that `train` cannot avoid, with nothing
 * else, on OpenBLAS with one thread. Per step (batch 100, 784-50-10): the forward products
 * x·W1 (100x784 by 784x50) and h·W2 (100x50 by 50x10), the weight gradients x^T·dh
 * (784x100 by 100x50) and h^T·dout (50x100 by 100x10), and the second layer's input gradient
 * dout·W2^T (100x10 by 10x50); the first layer's input gradient is not needed. Then the
 * evaluations: 17 times the whole training (60,000) and test (10,000) sets through both
 * layers, in blocks of 100 rows as the trainer does.
 *
 * Build: cc -O2 -o floor floor.c -lopenblas     Run: ./floor [iters] [--double]
 * Prints floor_s (the products alone) and the GFLOP/s reached. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern void openblas_set_num_threads(int);

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *filled(size_t n, int dbl) {
    size_t size = dbl ? sizeof(double) : sizeof(float);
    char *p = malloc(n * size);
    for (size_t i = 0; i < n; i++) {
        double v = (double)rand() / RAND_MAX - 0.5;
        if (dbl) ((double *)p)[i] = v; else ((float *)p)[i] = (float)v;
    }
    return p;
}

/* C (m x n) = op(A) (m x k) · op(B) (k x n), column-major, in float or double. */
static void gemm(int dbl, int ta, int tb, int m, int n, int k, void *a, int lda, void *b, int ldb, void *c) {
    enum CBLAS_TRANSPOSE A = ta ? CblasTrans : CblasNoTrans, B = tb ? CblasTrans : CblasNoTrans;
    if (dbl) cblas_dgemm(CblasColMajor, A, B, m, n, k, 1.0, a, lda, b, ldb, 0.0, c, m);
    else cblas_sgemm(CblasColMajor, A, B, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, m);
}

int main(int argc, char **argv) {
    int iters = 10000, dbl = 0, evals = 17, block = 100;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--double")) dbl = 1; else iters = atoi(argv[i]);
    }
    openblas_set_num_threads(1);
    void *x = filled(100 * 784, dbl), *W1 = filled(784 * 50, dbl), *h = filled(100 * 50, dbl);
    void *W2 = filled(50 * 10, dbl), *s = filled(100 * 10, dbl), *dW1 = filled(784 * 50, dbl);
    void *dW2 = filled(50 * 10, dbl), *dh = filled(100 * 50, dbl);
    void *X = filled((size_t)block * 784, dbl), *H = filled((size_t)block * 50, dbl), *S = filled((size_t)block * 10, dbl);
    double flops = 0, t0 = now();
    for (int i = 0; i < iters; i++) {
        gemm(dbl, 0, 0, 100, 50, 784, x, 100, W1, 784, h);   /* x·W1 */
        gemm(dbl, 0, 0, 100, 10, 50, h, 100, W2, 50, s);     /* h·W2 */
        gemm(dbl, 1, 0, 50, 10, 100, h, 100, s, 100, dW2);   /* hᵀ·dout */
        gemm(dbl, 0, 1, 100, 50, 10, s, 100, W2, 50, dh);    /* dout·W2ᵀ */
        gemm(dbl, 1, 0, 784, 50, 100, x, 100, dh, 100, dW1); /* xᵀ·dh */
        flops += 2.0 * 100 * (784 * 50 * 2 + 50 * 10 * 3);
    }
    double t_train = now() - t0;
    for (int e = 0; e < evals; e++)
        for (int rows = 0; rows < 70000; rows += block) {
            gemm(dbl, 0, 0, block, 50, 784, X, block, W1, 784, H);
            gemm(dbl, 0, 0, block, 10, 50, H, block, W2, 50, S);
            flops += 2.0 * block * (784 * 50 + 50 * 10);
        }
    double total = now() - t0;
    printf("floor_s=%.2f train_products_s=%.2f eval_products_s=%.2f gflops=%.1f precision=%s\n",
           total, t_train, total - t_train, flops / total / 1e9, dbl ? "double" : "single");
    return 0;
}

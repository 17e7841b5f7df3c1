// A task of a directive test: reads a JSON integer N from stdin. N >= 0:
// burns CPU for N milliseconds (so a cancel interrupts it), then prints
// N. N < 0: refuses the input, exit status 2 (a fatal failure).
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(void) {
    char buf[64] = {0};
    size_t n = fread(buf, 1, sizeof buf - 1, stdin);
    buf[n] = 0;
    long ms = atol(buf);
    if (ms < 0) {
        fprintf(stderr, "refused input %ld\n", ms);
        return 2;
    }
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    volatile unsigned long x = 0;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (elapsed >= ms) break;
        for (int i = 0; i < 10000; i++) x += i;
    }
    if (x == 1) fputs("", stderr);
    printf("%ld", ms);
    return 0;
}

// Burns CPU for the number of milliseconds given on stdin (default 200),
// then prints "done". A slow function for saturation tests.
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(void) {
    char buf[32] = {0};
    size_t n = fread(buf, 1, sizeof buf - 1, stdin);
    buf[n] = 0;
    long ms = n ? atol(buf) : 200;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    volatile unsigned long x = 0;
    for (;;) {
        for (int i = 0; i < 10000; i++) x += i;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (elapsed >= ms) break;
    }
    if (x == 1) fputs("", stderr);
    printf("done\n");
    return 0;
}

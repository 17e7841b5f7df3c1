// primes: counts the primes below N (read from stdin; default 1000000) with
// a sieve of Eratosthenes and prints the count. A CPU- and memory-heavy
// function: N = 10000000 takes ~10 MB of linear memory.
//
//   colony deploy primes examples/build/primes.wasm
//   echo 1000000 | colony invoke primes        # 78498
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    char buf[32] = {0};
    size_t n = fread(buf, 1, sizeof buf - 1, stdin);
    buf[n] = 0;
    long limit = n ? atol(buf) : 1000000;
    if (limit < 0 || limit > 1000000000L) {
        fprintf(stderr, "primes: N must be between 0 and 1000000000, got %s\n", buf);
        return 2;
    }
    if (limit < 3) { printf("0\n"); return 0; }
    unsigned char *composite = calloc((size_t)limit, 1);
    if (!composite) {
        fprintf(stderr, "primes: out of memory for N=%ld\n", limit);
        return 1;
    }
    long count = 0;
    for (long i = 2; i < limit; i++) {
        if (composite[i]) continue;
        count++;
        if (i > limit / i) continue;  // i * i would pass the limit (and overflow a 32-bit long)
        for (long j = i * i; j < limit; j += i) composite[j] = 1;
    }
    printf("%ld\n", count);
    free(composite);
    return 0;
}

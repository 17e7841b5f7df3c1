// Reads a decimal N from stdin and writes N bytes of 'x' to stdout. A
// large output of a known size for tests of how outputs travel.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    char buf[32] = {0};
    size_t n = fread(buf, 1, sizeof buf - 1, stdin);
    buf[n] = 0;
    long left = atol(buf);
    static char xs[65536];
    memset(xs, 'x', sizeof xs);
    while (left > 0) {
        size_t chunk = left < (long)sizeof xs ? (size_t)left : sizeof xs;
        if (fwrite(xs, 1, chunk, stdout) != chunk) return 1;
        left -= (long)chunk;
    }
    return 0;
}

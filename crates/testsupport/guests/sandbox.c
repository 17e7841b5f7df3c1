// Tries to reach the host: files by absolute and relative paths, the
// parent directory, the host environment. Prints one line per attempt:
// "<what>: denied (<reason>)" or "<what>: OPENED". Exits 0 either way, so
// the test reads the verdicts from stdout.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>

static void try_open(const char *path) {
    FILE *f = fopen(path, "r");
    if (f) {
        printf("%s: OPENED\n", path);
        fclose(f);
    } else {
        printf("%s: denied (%s)\n", path, strerror(errno));
    }
}

int main(void) {
    try_open("/etc/passwd");
    try_open("../../../../etc/passwd");
    try_open("etc/passwd");
    try_open("/proc/self/environ");
    DIR *d = opendir("/");
    if (d) { printf("/: OPENED\n"); closedir(d); }
    else printf("/: denied (%s)\n", strerror(errno));
    const char *home = getenv("HOME");
    const char *path = getenv("PATH");
    printf("HOME=%s PATH=%s\n", home ? home : "(unset)", path ? path : "(unset)");
    return 0;
}

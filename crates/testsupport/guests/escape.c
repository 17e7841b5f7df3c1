// Tries to reach outside the preopens of the `files` runtime and reports
// each try in /output/report.txt as "NAME: denied" or "NAME: ALLOWED ...".
// Also leaves behind, in /output, a symlink to a host file (when WASI
// lets it make one), a directory and an ordinary file `ok.txt`.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static FILE *report;

static void try_read(const char *name, const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        fprintf(report, "%s: denied\n", name);
        return;
    }
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) {
        fprintf(report, "%s: denied\n", name);
        return;
    }
    buf[n] = 0;
    for (ssize_t i = 0; i < n; i++) if (buf[i] == '\n') buf[i] = ' ';
    fprintf(report, "%s: ALLOWED %s\n", name, buf);
}

static void try_write(const char *name, const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        fprintf(report, "%s: denied\n", name);
        return;
    }
    ssize_t n = write(fd, "x", 1);
    close(fd);
    fprintf(report, "%s: %s\n", name, n == 1 ? "ALLOWED" : "denied");
}

int main(void) {
    report = fopen("/output/report.txt", "w");
    if (!report) return 3;
    try_read("dotdot", "/input/../../../../etc/passwd");
    try_read("absolute", "/etc/passwd");
    try_read("relative", "../etc/passwd");
    try_read("proc", "/proc/self/environ");
    try_write("write-input", "/input/a.txt");
    try_write("create-input", "/input/new.txt");
    try_write("escape-output", "/output/../../escaped.txt");
    if (symlink("/etc/passwd", "/output/abs-link") == 0) {
        try_read("abs-link", "/output/abs-link");
    } else {
        fprintf(report, "abs-link: denied\n");
    }
    if (symlink("../../../../../../../../etc/passwd", "/output/rel-link") == 0) {
        try_read("rel-link", "/output/rel-link");
    } else {
        fprintf(report, "rel-link: denied\n");
    }
    // A symlink that stays inside: WASI allows it; the host must still not
    // collect it as an output.
    FILE *ok = fopen("/output/ok.txt", "w");
    if (!ok) return 3;
    fputs("fine\n", ok);
    fclose(ok);
    if (symlink("ok.txt", "/output/inner-link") != 0) {
        fprintf(report, "inner-link: not made\n");
    }
    mkdir("/output/sub", 0755);
    FILE *nested = fopen("/output/sub/nested.txt", "w");
    if (nested) {
        fputs("nested\n", nested);
        fclose(nested);
    }
    return fclose(report) == 0 ? 0 : 3;
}

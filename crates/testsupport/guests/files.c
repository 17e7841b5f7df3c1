// Runs file commands read from stdin, one per line:
//   read PATH         prints the file's content
//   write PATH TEXT   creates or overwrites the file with TEXT
//   list PATH         prints the directory's entries, sorted, one per line
//   move FROM TO      renames FROM to TO
//   link TARGET PATH  makes PATH a symlink to TARGET
// On the first failure writes "error: <strerror>" to stderr (the API
// reports its tail) and exits 1. Used to check what a guest sees through
// the directories its manifest mounts.
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fail(void) {
    fprintf(stderr, "error: %s\n", strerror(errno));
    return 1;
}

static int do_read(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return fail();
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
    int bad = ferror(f);
    fclose(f);
    return bad ? fail() : 0;
}

static int do_write(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return fail();
    int bad = fputs(text, f) == EOF;
    if (fclose(f) != 0) bad = 1;
    return bad ? fail() : 0;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int do_list(const char *path) {
    DIR *d = opendir(path);
    if (!d) return fail();
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        names = realloc(names, (n + 1) * sizeof *names);
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, by_name);
    for (size_t i = 0; i < n; i++) {
        printf("%s\n", names[i]);
        free(names[i]);
    }
    free(names);
    return 0;
}

int main(void) {
    char line[8192];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = '\0';
        char *cmd = strtok(line, " ");
        char *path = strtok(NULL, " ");
        char *text = strtok(NULL, "");
        if (!cmd) continue;
        int rc;
        if (!strcmp(cmd, "read") && path) rc = do_read(path);
        else if (!strcmp(cmd, "write") && path) rc = do_write(path, text ? text : "");
        else if (!strcmp(cmd, "list") && path) rc = do_list(path);
        else if (!strcmp(cmd, "move") && path && text) rc = rename(path, text) ? fail() : 0;
        else if (!strcmp(cmd, "link") && path && text) rc = symlink(path, text) ? fail() : 0;
        else {
            fprintf(stderr, "error: bad command %s\n", cmd);
            rc = 2;
        }
        if (rc) return rc;
        fflush(stdout);
    }
    return 0;
}

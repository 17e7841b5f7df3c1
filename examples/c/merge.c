// A function on the `files` I/O runtime: concatenates /input/a.txt and
// /input/b.txt into /output/merged.txt, and writes the byte count to
// /output/count.txt.
//
//   colony deploy merge examples/build/merge.wasm --io files \
//       --input-file a.txt --input-file b.txt --output-file merged.txt --output-file count.txt
#include <stdio.h>
#include <stdlib.h>

static long copy(FILE *out, const char *path) {
    FILE *in = fopen(path, "rb");
    if (!in) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(2);
    }
    static char buf[65536];
    long total = 0;
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        if (fwrite(buf, 1, n, out) != n) {
            fprintf(stderr, "cannot write /output/merged.txt\n");
            exit(3);
        }
        total += (long)n;
    }
    fclose(in);
    return total;
}

int main(void) {
    FILE *out = fopen("/output/merged.txt", "wb");
    if (!out) {
        fprintf(stderr, "cannot create /output/merged.txt\n");
        return 3;
    }
    long total = copy(out, "/input/a.txt") + copy(out, "/input/b.txt");
    if (fclose(out) != 0) {
        return 3;
    }
    FILE *count = fopen("/output/count.txt", "w");
    if (!count) {
        return 3;
    }
    fprintf(count, "%ld\n", total);
    return fclose(count) == 0 ? 0 : 3;
}

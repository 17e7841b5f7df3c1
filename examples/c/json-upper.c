// json-upper: a JSON transform. Reads one JSON document on stdin and writes
// it back with every string value (not object keys) upper-cased. Rejects
// input that is not well-formed enough to walk (exit status 1, reason on
// stderr).
//
//   colony deploy json-upper examples/build/json-upper.wasm
//   colony invoke json-upper --data '{"name":"ada","tags":["x","y"]}'
//   # {"name":"ADA","tags":["X","Y"]}
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

// Reads all of stdin into a growing buffer.
static char *read_all(size_t *len) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    size_t r;
    while ((r = fread(buf + n, 1, cap - n, stdin)) > 0) {
        n += r;
        if (n == cap) {
            cap *= 2;
            char *grown = realloc(buf, cap);
            if (!grown) { free(buf); return NULL; }
            buf = grown;
        }
    }
    *len = n;
    return buf;
}

int main(void) {
    size_t len;
    char *in = read_all(&len);
    if (!in) { fprintf(stderr, "json-upper: out of memory\n"); return 1; }
    // Track, per nesting level, whether we are in an object and whether the
    // next string there is a key.
    char stack[256];
    int depth = 0;
    int expect_key = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        switch (c) {
        case '{':
        case '[':
            if (depth == (int)sizeof stack) { fprintf(stderr, "json-upper: nested too deeply\n"); return 1; }
            stack[depth++] = c;
            expect_key = (c == '{');
            putchar(c);
            break;
        case '}':
        case ']':
            if (depth == 0 || stack[depth - 1] != (c == '}' ? '{' : '[')) {
                fprintf(stderr, "json-upper: unbalanced '%c' at byte %zu\n", c, i);
                return 1;
            }
            depth--;
            expect_key = 0;
            putchar(c);
            break;
        case ',':
            expect_key = depth > 0 && stack[depth - 1] == '{';
            putchar(c);
            break;
        case ':':
            expect_key = 0;
            putchar(c);
            break;
        case '"': {
            int is_key = expect_key;
            putchar('"');
            for (i++; i < len && in[i] != '"'; i++) {
                if (in[i] == '\\' && i + 1 < len) {
                    putchar(in[i++]);
                    putchar(in[i]);
                    continue;
                }
                putchar(is_key ? in[i] : toupper((unsigned char)in[i]));
            }
            if (i >= len) { fprintf(stderr, "json-upper: unterminated string\n"); return 1; }
            putchar('"');
            break;
        }
        default:
            putchar(c);
        }
    }
    if (depth != 0) { fprintf(stderr, "json-upper: %d unclosed bracket(s)\n", depth); return 1; }
    free(in);
    return 0;
}

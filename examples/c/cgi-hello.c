// cgi-hello: a Wagi-style CGI function. Colony passes the HTTP request as
// CGI 1.1 (REQUEST_METHOD, PATH_INFO, QUERY_STRING, CONTENT_TYPE,
// CONTENT_LENGTH, request headers as HTTP_*, the body on stdin); the
// function answers with header lines, a blank line, then the body.
//
//   GET  /         a greeting naming the method, script, path and query
//   POST /echo     201, the request body back with its content type
//   ANY  /headers  the HTTP_* variables it sees, one per line, sorted
//   anything else  404
//
//   colony deploy hello examples/build/cgi-hello.wasm --executor cgi
//   curl 'http://127.0.0.1:8080/http/hello/?name=ada'
//   curl -d '{"a":1}' -H 'Content-Type: application/json' http://127.0.0.1:8080/http/hello/echo
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

// A CGI variable, or "" when unset.
static const char *var(const char *name) {
    const char *value = getenv(name);
    return value ? value : "";
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int greet(void) {
    printf("Content-Type: text/plain\n\n");
    printf("Hello from a Colony CGI function!\n");
    printf("method: %s\nscript: %s\npath: %s\nquery: %s\n", var("REQUEST_METHOD"),
           var("SCRIPT_NAME"), var("PATH_INFO"), var("QUERY_STRING"));
    return 0;
}

// Copies exactly CONTENT_LENGTH bytes of the body back, under its own type.
static int echo(void) {
    const char *type = var("CONTENT_TYPE");
    unsigned long left = strtoul(var("CONTENT_LENGTH"), NULL, 10);
    printf("Status: 201 Created\n");
    printf("Content-Type: %s\n", *type ? type : "application/octet-stream");
    printf("X-Colony-Example: cgi-hello\n\n");
    char buf[16384];
    while (left > 0) {
        size_t want = left < sizeof buf ? left : sizeof buf;
        size_t got = fread(buf, 1, want, stdin);
        if (got == 0) {
            fprintf(stderr, "cgi-hello: body ended %lu bytes early\n", left);
            return 1;
        }
        if (fwrite(buf, 1, got, stdout) != got) return 1;
        left -= got;
    }
    return 0;
}

static int headers(void) {
    size_t n = 0;
    for (char **e = environ; *e; e++) n++;
    const char **found = malloc((n ? n : 1) * sizeof *found);
    if (!found) return 1;
    size_t count = 0;
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "HTTP_", 5) == 0) found[count++] = *e;
    qsort(found, count, sizeof *found, by_name);
    printf("Content-Type: text/plain\n\n");
    for (size_t i = 0; i < count; i++) printf("%s\n", found[i]);
    free(found);
    return 0;
}

static int not_allowed(const char *allow) {
    printf("Status: 405 Method Not Allowed\nAllow: %s\nContent-Type: text/plain\n\n", allow);
    printf("use %s here\n", allow);
    return 0;
}

int main(void) {
    const char *method = var("REQUEST_METHOD");
    const char *path = var("PATH_INFO");
    if (strcmp(path, "") == 0 || strcmp(path, "/") == 0)
        return strcmp(method, "GET") == 0 ? greet() : not_allowed("GET");
    if (strcmp(path, "/echo") == 0)
        return strcmp(method, "POST") == 0 ? echo() : not_allowed("POST");
    if (strcmp(path, "/headers") == 0) return headers();
    printf("Status: 404 Not Found\nContent-Type: text/plain\n\n");
    printf("no such page: %s\n", path);
    return 0;
}

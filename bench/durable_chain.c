/* The durable chain of bench/durable.py, compiled: what a hot path in C could reach.
 *
 *   durable_chain DB LOGDIR N CONCURRENCY NEXT_INDEX HEADER SQL... -- COMMAND...
 *
 * Keeps CONCURRENCY jobs running until N have started. Each start runs the SQL statements
 * (prepared once), binding :now (the time) and :prev / :next (job ids: the one that just
 * ended in this slot, if any, and the one started); the statement at NEXT_INDEX returns
 * the next job's id. Then LOGDIR/<id> is created with HEADER, COMMAND is started with
 * posix_spawn (stdin /dev/null, stdout and stderr the log, a new session), and the loop
 * waits for any job to end. Prints jobs/s, from the first start to the last one's end. */
#include "durable.h" /* first: it defines _GNU_SOURCE */

#include <sys/wait.h>
#include <time.h>

#define ID_MAX 128

struct chain {
    sqlite3 *db;
    sqlite3_stmt **sql;
    char **sql_text;
    int nsql, next_index, null_fd;
    const char *logdir, *header;
    char **cmd;
    posix_spawnattr_t attr;
};

static double clock_s(clockid_t which) {
    struct timespec ts;
    clock_gettime(which, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One hand-off: record that `prev` ended (empty: nothing ended) and start the next job,
 * whose id goes to `next`; return its pid. */
static pid_t start_next(struct chain *c, const char *prev, char next[ID_MAX]) {
    double now = clock_s(CLOCK_REALTIME);
    next[0] = '\0';
    for (int i = 0; i < c->nsql; i++) {
        sqlite3_stmt *st = c->sql[i];
        int at = sqlite3_bind_parameter_index(st, ":now");
        if (at > 0) sqlite3_bind_double(st, at, now);
        bind_text(st, ":prev", prev[0] ? prev : NULL, -1);
        bind_text(st, ":next", next, -1);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) die(c->db, c->sql_text[i]);
        if (i == c->next_index) {
            if (rc != SQLITE_ROW) die(c->db, "no queued job left");
            snprintf(next, ID_MAX, "%s", (const char *)sqlite3_column_text(st, 0));
        }
        sqlite3_reset(st);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", c->logdir, next);
    return spawn_logged(c->cmd, &c->attr, c->null_fd, path, c->header);
}

int main(int argc, char **argv) {
    int first_sql = 7, sep = first_sql;
    while (sep < argc && strcmp(argv[sep], "--") != 0) sep++;
    if (sep >= argc - 1) {
        fprintf(stderr, "usage: durable_chain DB LOGDIR N CONCURRENCY NEXT_INDEX HEADER SQL..."
                        " -- CMD...\n");
        return 2;
    }
    struct chain c = {.logdir = argv[2], .header = argv[6], .cmd = argv + sep + 1};
    long n = atol(argv[3]);
    int slots = atoi(argv[4]);
    c.next_index = atoi(argv[5]);
    c.nsql = sep - first_sql;
    c.sql_text = argv + first_sql;
    if (n < 1 || slots < 1) {
        fprintf(stderr, "durable_chain: N and CONCURRENCY must be at least 1\n");
        return 2;
    }

    c.db = open_store(argv[1], c.sql_text, c.nsql, &c.sql);
    c.null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    posix_spawnattr_init(&c.attr);
    posix_spawnattr_setflags(&c.attr, POSIX_SPAWN_SETSID);

    pid_t *pid = calloc((size_t)slots, sizeof *pid);
    char(*id)[ID_MAX] = calloc((size_t)slots, sizeof *id);
    long started = 0, running = 0;
    double t0 = clock_s(CLOCK_MONOTONIC);
    for (int s = 0; s < slots && started < n; s++, started++, running++)
        pid[s] = start_next(&c, "", id[s]);
    while (running > 0) {
        pid_t ended = waitpid(-1, NULL, 0);
        if (ended < 0) return 1;
        int s = 0;
        while (s < slots && pid[s] != ended) s++;
        if (s == slots) continue; /* not ours */
        running--;
        if (started < n) {
            char prev[ID_MAX];
            memcpy(prev, id[s], ID_MAX);
            pid[s] = start_next(&c, prev, id[s]);
            started++, running++;
        } else {
            pid[s] = 0;
        }
    }
    printf("%.1f\n", (double)n / (clock_s(CLOCK_MONOTONIC) - t0));
    return 0;
}

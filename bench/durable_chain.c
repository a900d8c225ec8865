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
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

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

static void die(sqlite3 *db, const char *what) {
    fprintf(stderr, "durable_chain: %s: %s\n", what, db ? sqlite3_errmsg(db) : "");
    exit(1);
}

static void bind_text(sqlite3_stmt *st, const char *name, const char *value) {
    int i = sqlite3_bind_parameter_index(st, name);
    if (i > 0) sqlite3_bind_text(st, i, value, -1, SQLITE_TRANSIENT);
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
        bind_text(st, ":prev", prev[0] ? prev : NULL);
        bind_text(st, ":next", next);
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
    int log = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (log < 0 || write(log, c->header, strlen(c->header)) < 0) {
        perror(path);
        exit(1);
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, c->null_fd, 0);
    posix_spawn_file_actions_adddup2(&actions, log, 1);
    posix_spawn_file_actions_adddup2(&actions, log, 2);
    pid_t pid;
    int err = posix_spawn(&pid, c->cmd[0], &actions, &c->attr, c->cmd, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(log);
    if (err) {
        fprintf(stderr, "durable_chain: %s: %s\n", c->cmd[0], strerror(err));
        exit(1);
    }
    return pid;
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

    if (sqlite3_open(argv[1], &c.db) != SQLITE_OK) die(c.db, "open");
    if (sqlite3_exec(c.db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL", 0, 0, 0))
        die(c.db, "pragma");
    c.sql = calloc((size_t)c.nsql, sizeof *c.sql);
    for (int i = 0; i < c.nsql; i++)
        if (sqlite3_prepare_v2(c.db, c.sql_text[i], -1, &c.sql[i], 0) != SQLITE_OK)
            die(c.db, c.sql_text[i]);
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

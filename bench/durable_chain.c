/* The durable chain of bench/durable.py, compiled: what a hot path in C could reach.
 *
 *   durable_chain DB LOGDIR N NEXT_INDEX HEADER SQL... -- COMMAND...
 *
 * Runs the SQL statements (prepared once) N times; each run binds :now (the time) and
 * :prev / :next (job ids), and the statement at NEXT_INDEX returns the next job's id. Then
 * LOGDIR/<id> is created with HEADER, COMMAND is started with posix_spawn (stdin
 * /dev/null, stdout and stderr the log, a new session) and waited for. Prints jobs/s. */
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

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
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

int main(int argc, char **argv) {
    int sep = 6;
    while (sep < argc && strcmp(argv[sep], "--") != 0) sep++;
    if (sep >= argc - 1) {
        fprintf(stderr, "usage: durable_chain DB LOGDIR N NEXT_INDEX HEADER SQL... -- CMD...\n");
        return 2;
    }
    const char *logdir = argv[2], *header = argv[5];
    long n = atol(argv[3]);
    int next_index = atoi(argv[4]), nsql = sep - 6;
    char **cmd = argv + sep + 1;

    sqlite3 *db;
    if (sqlite3_open(argv[1], &db) != SQLITE_OK) die(db, "open");
    if (sqlite3_exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL", 0, 0, 0))
        die(db, "pragma");
    sqlite3_stmt **sql = calloc((size_t)nsql, sizeof *sql);
    for (int i = 0; i < nsql; i++)
        if (sqlite3_prepare_v2(db, argv[6 + i], -1, &sql[i], 0) != SQLITE_OK) die(db, argv[6 + i]);

    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
    char prev[128] = "", next[128] = "", path[4096];
    double t0 = mono();
    for (long job = 0; job < n; job++) {
        double t = now();
        for (int i = 0; i < nsql; i++) {
            sqlite3_stmt *st = sql[i];
            int at = sqlite3_bind_parameter_index(st, ":now");
            if (at > 0) sqlite3_bind_double(st, at, t);
            bind_text(st, ":prev", prev[0] ? prev : NULL);
            bind_text(st, ":next", next);
            int rc = sqlite3_step(st);
            if (rc != SQLITE_ROW && rc != SQLITE_DONE) die(db, argv[6 + i]);
            if (i == next_index) {
                if (rc != SQLITE_ROW) die(db, "no queued job left");
                snprintf(next, sizeof next, "%s", (const char *)sqlite3_column_text(st, 0));
            }
            sqlite3_reset(st);
        }
        snprintf(path, sizeof path, "%s/%s", logdir, next);
        int log = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
        if (log < 0 || write(log, header, strlen(header)) < 0) {
            perror(path);
            return 1;
        }
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, null, 0);
        posix_spawn_file_actions_adddup2(&actions, log, 1);
        posix_spawn_file_actions_adddup2(&actions, log, 2);
        pid_t pid;
        int err = posix_spawn(&pid, cmd[0], &actions, &attr, cmd, environ);
        posix_spawn_file_actions_destroy(&actions);
        close(log);
        if (err) {
            fprintf(stderr, "durable_chain: %s: %s\n", cmd[0], strerror(err));
            return 1;
        }
        if (waitpid(pid, NULL, 0) < 0) return 1;
        snprintf(prev, sizeof prev, "%s", next);
    }
    printf("%.1f\n", (double)n / (mono() - t0));
    return 0;
}

/* What the two compiled durable floors share (bench/durable_chain.c, bench/durable_watch.c):
 * the store with its statements prepared once, binding by name, and a job's start with its
 * log. Any failure ends the program with a message naming what failed. */
#ifndef SPOOLQ_BENCH_DURABLE_H
#define SPOOLQ_BENCH_DURABLE_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

static void die(sqlite3 *db, const char *what) {
    fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what,
            db ? sqlite3_errmsg(db) : strerror(errno));
    exit(1);
}

/* The database at `path` (WAL, synchronous = NORMAL) with `n` statements prepared. */
static sqlite3 *open_store(const char *path, char **sql_text, int n, sqlite3_stmt ***sql) {
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK) die(db, "open");
    if (sqlite3_exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL", 0, 0, 0))
        die(db, "pragma");
    *sql = calloc((size_t)n, sizeof **sql);
    for (int i = 0; i < n; i++)
        if (sqlite3_prepare_v2(db, sql_text[i], -1, &(*sql)[i], 0) != SQLITE_OK)
            die(db, sql_text[i]);
    return db;
}

static void bind_text(sqlite3_stmt *st, const char *name, const char *value, int len) {
    int i = sqlite3_bind_parameter_index(st, name);
    if (i > 0) sqlite3_bind_text(st, i, value, len, SQLITE_TRANSIENT);
}

/* Create the log at `log_path` with `header`, start `cmd` (stdin `null_fd`, stdout and
 * stderr the log, `attr`'s flags); its pid. */
static pid_t spawn_logged(char **cmd, const posix_spawnattr_t *attr, int null_fd,
                          const char *log_path, const char *header) {
    int log = open(log_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (log < 0 || write(log, header, strlen(header)) < 0) die(NULL, log_path);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, null_fd, 0);
    posix_spawn_file_actions_adddup2(&actions, log, 1);
    posix_spawn_file_actions_adddup2(&actions, log, 2);
    pid_t pid;
    int err = posix_spawn(&pid, cmd[0], &actions, attr, cmd, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(log);
    if (err) {
        errno = err;
        die(NULL, cmd[0]);
    }
    return pid;
}

#endif

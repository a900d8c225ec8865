/* The latency floor of a durable watcher, compiled: bench/durable.py, "the durable watch".
 *
 *   durable_watch SPOOL STATE HEADER SQL... -- COMMAND...
 *
 * Waits for inotify's IN_MOVED_TO in SPOOL. For each NAME.trigger: renames it into
 * STATE/claimed/, reads it, runs the SQL statements (prepared once; :id, :trigger,
 * :claimed, :log, :spec and :now bound) on STATE/chain.db, creates STATE/logs/<id>.log with
 * HEADER and starts COMMAND with posix_spawn (stdin /dev/null, stdout and stderr the log,
 * a new session). What a durable queue must do before a job starts, and nothing else:
 * children are reaped by the kernel (SIGCHLD ignored), their outcomes not recorded.
 * Prints "ready" on stderr once the watch is set. Stops on SIGTERM. */
#include "durable.h" /* first: it defines _GNU_SOURCE */

#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int main(int argc, char **argv) {
    int first_sql = 4, sep = first_sql;
    while (sep < argc && strcmp(argv[sep], "--") != 0) sep++;
    if (sep >= argc - 1) {
        fprintf(stderr, "usage: durable_watch SPOOL STATE HEADER SQL... -- CMD...\n");
        return 2;
    }
    const char *spool = argv[1], *state = argv[2], *header = argv[3];
    char **cmd = argv + sep + 1;
    int nsql = sep - first_sql;
    signal(SIGCHLD, SIG_IGN);

    char path[4096];
    snprintf(path, sizeof path, "%s/chain.db", state);
    sqlite3_stmt **sql;
    sqlite3 *db = open_store(path, argv + first_sql, nsql, &sql);

    int spool_fd = open(spool, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    snprintf(path, sizeof path, "%s/claimed", state);
    int claimed_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int in = inotify_init1(IN_CLOEXEC);
    if (spool_fd < 0 || claimed_fd < 0 || in < 0 || inotify_add_watch(in, spool, IN_MOVED_TO) < 0) {
        die(NULL, "set-up");
    }
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
    fprintf(stderr, "ready\n");

    char events[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
    long count = 0;
    for (;;) {
        ssize_t len = read(in, events, sizeof events);
        if (len <= 0) return 1;
        for (char *p = events; p < events + len;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            p += sizeof *ev + ev->len;
            if (!ev->len || !ends_with(ev->name, ".trigger")) continue;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
            char id[64], claimed[4096], trigger[4096], log[4096], spec[64 * 1024];
            snprintf(id, sizeof id, "J%d-%09ld", (int)getpid(), ++count);
            snprintf(claimed, sizeof claimed, "%s/claimed/%s.trigger", state, id);
            snprintf(trigger, sizeof trigger, "%s/%s", spool, ev->name);
            snprintf(log, sizeof log, "%s/logs/%s.log", state, id);
            if (renameat(spool_fd, ev->name, claimed_fd, strrchr(claimed, '/') + 1) < 0) continue;
            int fd = openat(claimed_fd, strrchr(claimed, '/') + 1,
                            O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
            struct stat st;
            ssize_t n = -1;
            if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
                n = read(fd, spec, sizeof spec);
            if (fd >= 0) close(fd);
            if (n < 0) continue;
            for (int i = 0; i < nsql; i++) {
                sqlite3_stmt *s = sql[i];
                int at = sqlite3_bind_parameter_index(s, ":now");
                if (at > 0) sqlite3_bind_double(s, at, now);
                bind_text(s, ":id", id, -1);
                bind_text(s, ":trigger", trigger, -1);
                bind_text(s, ":claimed", claimed, -1);
                bind_text(s, ":log", log, -1);
                bind_text(s, ":spec", spec, (int)n);
                int rc = sqlite3_step(s);
                if (rc != SQLITE_ROW && rc != SQLITE_DONE) die(db, argv[first_sql + i]);
                sqlite3_reset(s);
            }
            spawn_logged(cmd, &attr, null_fd, log, header);
        }
    }
}

/*
 * Code Actions JavaScript engine: the supervisor of a warm environment (engines/PROTOCOL.md,
 * "Warm environments").
 *
 * A warm environment is a container bound to one code. This program is its PID 1. V8 cannot
 * be forked, so instead of forking a pre-initialised engine it keeps the next run's Node
 * process started ahead (start.sh `warm-run`: node with the harness loaded, blocked reading
 * its job from a pipe only this supervisor writes). A run's job goes down that pipe together
 * with the code's source from the `bind` frame; Node writes the run's frames straight to the
 * container's stdout. Between runs the supervisor kills every other process, empties every
 * writable place (/tmp, /dev/shm, /dev/mqueue, System V IPC) and only then starts the next
 * Node, so nothing of one run can reach the next.
 *
 * Written in C, not JavaScript: it must make itself undumpable (no ptrace, no /proc/1/mem or
 * /proc/1/fd for the code), which Node cannot. It never runs user code; as PID 1 of its PID
 * namespace it gets no signal it did not ask for. Its own messages (markers) carry the high
 * bit in their length and the nonce of the run's `seal`, which arrives only after the run's
 * job was handed over, so a run can neither forge nor predict them.
 *
 * The frames it reads come from the worker (trusted); it reads only the few fields it needs
 * ("t", "nonce", "timeout_ms") and passes the rest on untouched.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MARKER 0x80000000u
#define CONTROL_MAX (4u * 1024 * 1024)
/* A job carries the request body and parameters; the worker caps those far below this. */
#define JOB_MAX (256u * 1024 * 1024)
#define NONCE_MAX 128
#define DEADLINE_GRACE_MS 5000
#define KILL_PATIENCE_MS 2000
/* Deeper than this under /tmp and the environment is retired rather than cleaned. */
#define CLEAN_DEPTH_MAX 64
#define START_SH "/opt/codeactions/start.sh"
/* The harness writes one byte here once it waits for its job (harness.js announceReady). */
#define READY_FD 5
#define BOOT_PATIENCE_MS 30000
/* Resident mode: fd 5 stays the control pipe (the harness's bytes below), the jobs come on
 * fd 6 (harness.js JOB_FD). */
#define JOB_FD 6
#define SAID_BEGUN 'B' /* its last frames begin: a crash from now on is not reported by us */
/* Said just before the `end` frame (the worker's `finish` follows that frame): */
#define SAID_ENDED 'E'   /* the run ended and the process serves the next one */
#define SAID_LEAVING 'X' /* the run ended and the process exits (it is unfit for another) */
/* How long `finish` waits for a process that began its last frames to say how it ended, or
 * for one that said it leaves to exit by itself (its exit status is then its own). */
#define SETTLE_PATIENCE_MS 1000

static const char *const WRITABLE_DIRS[] = {"/tmp", "/dev/shm", "/dev/mqueue"};
static const char *const OOM_COUNTERS[] = {"/sys/fs/cgroup/memory.events",
                                           "/sys/fs/cgroup/memory/memory.oom_control"};

static const char *heap_mb = "";
/* Resident mode (bind frame "resident": true): the run's Node stays for the next run while it
 * ended its run and its resident memory is at most rss_max bytes. */
static int resident = 0;
static long long rss_max = 0;

/* ------------------------------------------------------------------------------- clock */

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* -------------------------------------------------------------------------------- wire */

static int read_exact(int fd, unsigned char *buf, size_t size) {
    /* 1 when all of it was read, 0 at EOF or on an error. */
    while (size) {
        ssize_t n = read(fd, buf, size);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return 0;
        buf += n;
        size -= (size_t)n;
    }
    return 1;
}

static int write_all(int fd, const void *data, size_t size) {
    const unsigned char *p = data;
    while (size) {
        ssize_t n = write(fd, p, size);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return 0;
        p += n;
        size -= (size_t)n;
    }
    return 1;
}

/* One frame (4-byte big-endian length, then the bytes), NUL-terminated for the field
 * lookups; NULL at EOF or when it is larger than `max` (both end the environment). */
static char *read_frame(int fd, uint32_t max, uint32_t *length) {
    unsigned char header[4];
    if (!read_exact(fd, header, 4)) return NULL;
    uint32_t size = (uint32_t)header[0] << 24 | (uint32_t)header[1] << 16 |
                    (uint32_t)header[2] << 8 | header[3];
    if (size > max) return NULL;
    char *frame = malloc((size_t)size + 1);
    if (!frame) return NULL;
    if (!read_exact(fd, (unsigned char *)frame, size)) {
        free(frame);
        return NULL;
    }
    frame[size] = '\0';
    *length = size;
    return frame;
}

static void put_length(unsigned char *out, uint32_t size) {
    out[0] = size >> 24;
    out[1] = size >> 16;
    out[2] = size >> 8;
    out[3] = size;
}

static void send_message(uint32_t flag, const char *fmt, ...) {
    char body[1024];
    unsigned char header[4];
    va_list args;
    va_start(args, fmt);
    int size = vsnprintf(body, sizeof body, fmt, args);
    va_end(args);
    if (size < 0 || (size_t)size >= sizeof body) _exit(7);
    put_length(header, flag | (uint32_t)size);
    if (!write_all(1, header, 4) || !write_all(1, body, (size_t)size)) _exit(0);
}

/* Where `"key"` is a key of the frame: after it, whitespace and a colon. A quote inside a
 * JSON string is always escaped, so an unescaped `"key"` is structural. */
static const char *field_value(const char *frame, const char *key) {
    char quoted[64];
    snprintf(quoted, sizeof quoted, "\"%s\"", key);
    for (const char *at = strstr(frame, quoted); at; at = strstr(at + 1, quoted)) {
        const char *p = at + strlen(quoted);
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
        if (*p != ':') continue;
        p++;
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
        return p;
    }
    return NULL;
}

/* A short string field made of [A-Za-z0-9_-] (what the worker's "t" and nonces are). */
static int string_field(const char *frame, const char *key, char *out, size_t size) {
    const char *p = field_value(frame, key);
    if (!p || *p != '"') return 0;
    p++;
    size_t n = 0;
    for (; *p && *p != '"'; p++) {
        char c = *p;
        int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_';
        if (!plain || n + 1 >= size) return 0;
        out[n++] = c;
    }
    if (*p != '"') return 0;
    out[n] = '\0';
    return 1;
}

static long long number_field(const char *frame, const char *key, long long fallback,
                              long long max) {
    const char *p = field_value(frame, key);
    if (!p || *p < '0' || *p > '9') return fallback;
    long long value = 0;
    for (; *p >= '0' && *p <= '9' && value < max; p++) value = value * 10 + (*p - '0');
    return value;
}

static long long int_field(const char *frame, const char *key, long long fallback) {
    return number_field(frame, key, fallback, 1000000000LL);
}

static int true_field(const char *frame, const char *key) {
    const char *p = field_value(frame, key);
    return p && strncmp(p, "true", 4) == 0;
}

static int frame_type_is(const char *frame, const char *type) {
    char t[32];
    return string_field(frame, "t", t, sizeof t) && strcmp(t, type) == 0;
}

/* ----------------------------------------------------------------------------- process */

/* The current run's Node: started ahead (spawn), handed its job, then waited for. */
struct child {
    pid_t pid;
    int job_fd; /* write end of the pipe the run's Node reads its job from */
    int pidfd;
    int status; /* its wait status once reaped, else -1 */
    /* resident mode */
    int control_fd; /* read end of the pipe the harness says 'R', 'B', 'E', 'X' on */
    int fresh;      /* it has not had a job yet: the bind frame goes first */
    int began, ended, leaving; /* what the harness said about the current run */
};

static void reap(struct child *run) {
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0) return;
        if (pid == run->pid) run->status = status;
    }
}

static int others_left(void) {
    DIR *proc = opendir("/proc");
    if (!proc) return 1;
    pid_t me = getpid();
    int found = 0;
    struct dirent *entry;
    while (!found && (entry = readdir(proc))) {
        char *end;
        long pid = strtol(entry->d_name, &end, 10);
        if (*end == '\0' && pid > 0 && pid != me) found = 1;
    }
    closedir(proc);
    return found;
}

/* SIGKILL every other process of the container (as PID 1, kill(-1) reaches all of them) and
 * reap them; 1 once none is left. */
static int kill_all(struct child *run) {
    long long deadline = now_ms() + KILL_PATIENCE_MS;
    for (;;) {
        kill(-1, SIGKILL);
        reap(run);
        if (!others_left()) return 1;
        if (now_ms() > deadline) return 0;
        usleep(1000);
    }
}

/* Resident mode: is the kept Node still there? */
static int alive(struct child *run) {
    reap(run);
    if (run->status >= 0) return 0;
    struct pollfd fd = {.fd = run->pidfd, .events = POLLIN};
    return poll(&fd, 1, 0) == 0;
}

/* Its resident memory (/proc/<pid>/statm: resident pages), in bytes; -1 if unknown. */
static long long rss_bytes(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
    FILE *statm = fopen(path, "r");
    if (!statm) return -1;
    long long size, pages;
    int read = fscanf(statm, "%lld %lld", &size, &pages);
    fclose(statm);
    if (read != 2) return -1;
    return pages * sysconf(_SC_PAGESIZE);
}

/* Every process but us and the resident Node (`keep`), SIGKILLed when `kill_them`; its
 * zombies (children it has not reaped yet) do not count. How many there were. */
static int others(pid_t keep, int kill_them) {
    DIR *proc = opendir("/proc");
    if (!proc) return 1;
    pid_t me = getpid();
    int found = 0;
    struct dirent *entry;
    while ((entry = readdir(proc))) {
        char *end;
        long pid = strtol(entry->d_name, &end, 10);
        if (*end != '\0' || pid <= 0 || pid == me || pid == keep) continue;
        char path[64], stat[512];
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue; /* gone meanwhile */
        ssize_t n = read(fd, stat, sizeof stat - 1);
        close(fd);
        if (n > 0) {
            stat[n] = '\0';
            const char *after = strrchr(stat, ')'); /* the name may hold anything but ends here */
            char state = 0;
            long ppid = 0;
            if (after && sscanf(after + 1, " %c %ld", &state, &ppid) == 2 && state == 'Z' &&
                ppid == keep)
                continue;
        }
        found++;
        if (kill_them) kill((pid_t)pid, SIGKILL);
    }
    closedir(proc);
    return found;
}

/* Resident mode, a run that ended: kill whatever it started and leave its Node alone. The
 * Node is stopped meanwhile so that it cannot start more; 1 once nothing else is left. */
static int kill_others(struct child *run) {
    if (!others(run->pid, 0)) return 1;
    long long deadline = now_ms() + KILL_PATIENCE_MS;
    kill(run->pid, SIGSTOP);
    int none = 0;
    for (;;) {
        others(run->pid, 1);
        reap(run);
        if (!others(run->pid, 0)) {
            none = 1;
            break;
        }
        if (now_ms() > deadline) break;
        usleep(1000);
    }
    kill(run->pid, SIGCONT);
    return none;
}

static long oom_kills(void) {
    for (size_t i = 0; i < sizeof OOM_COUNTERS / sizeof *OOM_COUNTERS; i++) {
        FILE *counters = fopen(OOM_COUNTERS[i], "r");
        if (!counters) continue;
        char name[64];
        long value;
        while (fscanf(counters, "%63s %ld", name, &value) == 2) {
            if (strcmp(name, "oom_kill") == 0) {
                fclose(counters);
                return value;
            }
        }
        fclose(counters);
    }
    return 0;
}

/* ------------------------------------------------------------------------------- clean */

/* Remove everything inside the directory `dirfd`; 1 when it is empty afterwards. */
static int empty_directory(int dirfd, int depth) {
    if (depth > CLEAN_DEPTH_MAX) return 0;
    DIR *dir = fdopendir(dirfd);
    if (!dir) {
        close(dirfd);
        return 0;
    }
    int ok = 1;
    struct dirent *entry;
    while ((entry = readdir(dir))) {
        const char *name = entry->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) continue;
        struct stat info;
        if (fstatat(dirfd, name, &info, AT_SYMLINK_NOFOLLOW) != 0) {
            ok = 0;
            continue;
        }
        if (S_ISDIR(info.st_mode)) {
            fchmodat(dirfd, name, 0700, 0); /* a run may have taken its own permissions away */
            int child = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (child < 0 || !empty_directory(child, depth + 1) ||
                unlinkat(dirfd, name, AT_REMOVEDIR) != 0)
                ok = 0;
        } else if (unlinkat(dirfd, name, 0) != 0) {
            ok = 0;
        }
    }
    closedir(dir);
    return ok;
}

static int ipc_ids(const char *kind, int *ids, int max) {
    char path[64];
    snprintf(path, sizeof path, "/proc/sysvipc/%s", kind);
    FILE *table = fopen(path, "r");
    if (!table) return 0;
    char line[512];
    int count = 0;
    if (fgets(line, sizeof line, table)) { /* the header */
        while (count < max && fgets(line, sizeof line, table)) {
            long key, id;
            if (sscanf(line, "%ld %ld", &key, &id) == 2) ids[count++] = (int)id;
        }
    }
    fclose(table);
    return count;
}

/* Remove every System V object of the namespace; 1 when none is left. */
static int remove_ipc(void) {
    int ids[256];
    int count = ipc_ids("shm", ids, 256);
    for (int i = 0; i < count; i++) shmctl(ids[i], IPC_RMID, NULL);
    count = ipc_ids("msg", ids, 256);
    for (int i = 0; i < count; i++) msgctl(ids[i], IPC_RMID, NULL);
    count = ipc_ids("sem", ids, 256);
    for (int i = 0; i < count; i++) semctl(ids[i], 0, IPC_RMID);
    return ipc_ids("shm", ids, 256) + ipc_ids("msg", ids, 256) + ipc_ids("sem", ids, 256) == 0;
}

/* Empty every place a run could leave something; 1 when all of it is empty. */
static int clean_up(void) {
    int ok = 1;
    for (size_t i = 0; i < sizeof WRITABLE_DIRS / sizeof *WRITABLE_DIRS; i++) {
        int fd = open(WRITABLE_DIRS[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) continue; /* not there in this container */
        if (!empty_directory(fd, 0)) ok = 0;
    }
    return remove_ipc() && ok;
}

/* ------------------------------------------------------------------------------- child */


/* Wait until the spawned Node is waiting for its job: 1 once it said so, 0 if it died or
 * took too long. */
static int await_ready(struct child *child, int ready_fd) {
    long long deadline = now_ms() + BOOT_PATIENCE_MS;
    for (;;) {
        struct pollfd fds[2] = {{.fd = ready_fd, .events = POLLIN},
                                {.fd = child->pidfd, .events = POLLIN}};
        long long left = deadline - now_ms();
        if (left <= 0) return 0;
        int ready = poll(fds, 2, (int)left);
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) return 0;
        if (fds[0].revents) {
            char byte = 0;
            return read(ready_fd, &byte, 1) == 1 && byte == 'R';
        }
        return 0; /* it ended before it was ready */
    }
}

/* Start the next run's Node (start.sh warm-run) and wait until it is ready for its job. */
static int spawn(struct child *child) {
    int job_pipe[2], ready_pipe[2];
    if (pipe2(job_pipe, O_CLOEXEC) != 0) return 0;
    if (pipe2(ready_pipe, O_CLOEXEC) != 0) {
        close(job_pipe[0]);
        close(job_pipe[1]);
        return 0;
    }
    pid_t pid = fork();
    if (pid == 0) {
        setsid();
        int adj = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
        if (adj >= 0) { /* the kernel's OOM killer takes this run, not the supervisor */
            write_all(adj, "1000", 4);
            close(adj);
        }
        /* Out of the way first (above the numbers they go to), then into place: dup2 onto
         * another number clears close-on-exec. */
        int job_in = fcntl(job_pipe[0], F_DUPFD_CLOEXEC, 10);
        int ready_out = fcntl(ready_pipe[1], F_DUPFD_CLOEXEC, 10);
        if (job_in < 0 || ready_out < 0 || dup2(ready_out, READY_FD) != READY_FD) _exit(70);
        if (resident) { /* jobs on fd 6, stdin empty (harness.js serveResident) */
            int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (null_fd < 0 || dup2(null_fd, 0) != 0 || dup2(job_in, JOB_FD) != JOB_FD) _exit(70);
        } else if (dup2(job_in, 0) != 0) {
            _exit(70);
        }
        /* The only dispositions the supervisor changes (main); it never blocks any. */
        signal(SIGPIPE, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        /* Inherited: 0 (job pipe; resident: /dev/null), 1 and 2 (the container's stdout and
         * stderr), 5 (ready; resident: control), resident: 6 (jobs); everything else is
         * close-on-exec. */
        char *const argv[] = {"sh", START_SH, resident ? "resident-run" : "warm-run", NULL};
        execv("/bin/sh", argv);
        _exit(70);
    }
    close(job_pipe[0]);
    close(ready_pipe[1]);
    if (pid < 0) {
        close(job_pipe[1]);
        close(ready_pipe[0]);
        return 0;
    }
    child->pid = pid;
    child->job_fd = job_pipe[1];
    child->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    child->status = -1;
    child->control_fd = -1;
    child->fresh = 1;
    child->began = child->ended = child->leaving = 0;
    int ready = child->pidfd >= 0 && await_ready(child, ready_pipe[0]);
    if (resident && ready)
        child->control_fd = ready_pipe[0];
    else
        close(ready_pipe[0]);
    return ready;
}

/* Resident mode: the Node and its pipes are done with (after kill_all). */
static void forget(struct child *child) {
    if (child->pidfd >= 0) close(child->pidfd);
    if (child->job_fd >= 0) close(child->job_fd);
    if (child->control_fd >= 0) close(child->control_fd);
    child->pidfd = child->job_fd = child->control_fd = -1;
}

/* Node died of a signal before the harness began its last frames (start.sh's one-shot crash
 * report, done here because no shell stays between the supervisor and Node). */
static void report_crash(struct child *child) {
    pid_t pid = child->pid;
    int status = child->status;
    if (!WIFSIGNALED(status) || WTERMSIG(status) == SIGKILL) return;
    char path[96];
    if (resident && child->began) return; /* it said so on the control pipe */
    snprintf(path, sizeof path, "/tmp/.codeactions-ended-%d", (int)pid);
    if (!resident && access(path, F_OK) == 0) return;
    char event[200] = "";
    snprintf(path, sizeof path, "/tmp/.codeactions-fatal-%d.json", (int)pid);
    /* The run could have put anything there: only a regular file is read (a FIFO would
     * block this open, a symlink could point anywhere). */
    FILE *report = NULL;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
    struct stat info;
    if (fd >= 0 && fstat(fd, &info) == 0 && S_ISREG(info.st_mode)) report = fdopen(fd, "r");
    if (!report && fd >= 0) close(fd);
    if (report) {
        char line[1024];
        while (fgets(line, sizeof line, report)) {
            const char *at = strstr(line, "\"event\": \"");
            if (!at) continue;
            at += strlen("\"event\": \"");
            const char *end = strrchr(at, '"'); /* the value's closing quote, not the comma */
            if (!end) end = at + strlen(at);
            size_t n = 0;
            for (; at < end && *at != '\n' && n + 1 < sizeof event; at++) {
                if (*at == '"' || *at == '\\' || (unsigned char)*at < 0x20) continue;
                event[n++] = *at;
            }
            event[n] = '\0';
            break;
        }
        fclose(report);
    }
    char error[320];
    if (strstr(event, "heap out of memory")) {
        if (*heap_mb)
            snprintf(error, sizeof error, "JavaScript heap out of memory (heap limit %s MiB)", heap_mb);
        else
            snprintf(error, sizeof error, "JavaScript heap out of memory");
    } else if (*event) {
        snprintf(error, sizeof error, "the JavaScript engine aborted: %s", event);
    } else {
        snprintf(error, sizeof error, "the JavaScript engine was killed by signal %d",
                 WTERMSIG(status));
    }
    send_message(0, "{\"t\": \"log\", \"level\": \"error\", \"content\": "
                    "\"Action execution failed: %s\"}", error);
    send_message(0, "{\"t\": \"end\", \"status\": \"failed\", \"error\": \"%s\"}", error);
}

static void status_fields(int status, char *out, size_t size) {
    if (status < 0)
        snprintf(out, size, "\"exit_code\": null, \"signal\": null");
    else if (WIFSIGNALED(status))
        snprintf(out, size, "\"exit_code\": %d, \"signal\": %d", 128 + WTERMSIG(status),
                 WTERMSIG(status));
    else
        snprintf(out, size, "\"exit_code\": %d, \"signal\": null", WEXITSTATUS(status));
}

/* The run's job goes to its Node together with the code (bind frame length, bind, job).
 * Resident mode: the bind frame only to a fresh Node, the job framed too, and the pipe stays
 * open for the next job (writing it is the go-ahead the Node waits for). */
static void hand_over(struct child *child, const char *bind, uint32_t bind_size,
                      const char *job, uint32_t job_size) {
    unsigned char header[4];
    int ok = 1;
    /* A Node that died early reads nothing: EPIPE (SIGPIPE is ignored); its exit tells. */
    if (!resident || child->fresh) {
        put_length(header, bind_size);
        ok = write_all(child->job_fd, header, 4) && write_all(child->job_fd, bind, bind_size);
    }
    if (resident) {
        put_length(header, job_size);
        ok = ok && write_all(child->job_fd, header, 4);
        child->fresh = 0;
        child->began = child->ended = child->leaving = 0;
    }
    if (ok) write_all(child->job_fd, job, job_size);
    if (!resident) {
        close(child->job_fd);
        child->job_fd = -1;
    }
}

/* Resident mode: take what the harness said on the control pipe (it never blocks). */
static void hear(struct child *child) {
    char said[64];
    ssize_t n = read(child->control_fd, said, sizeof said);
    if (n <= 0) { /* it closed its end: it is gone, its pidfd tells */
        if (n == 0 || errno != EINTR) {
            close(child->control_fd);
            child->control_fd = -1;
        }
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (said[i] == SAID_BEGUN) child->began = 1;
        if (said[i] == SAID_ENDED) child->ended = 1;
        if (said[i] == SAID_LEAVING) child->leaving = 1;
    }
}

/* One run, from its job to the worker's `finish`; 0 when the worker is gone. `gone`: the
 * run's Node ended (it exited, or the backstop deadline killed everything). */
static int supervise(struct child *child, char *nonce_out, long *oom_before, int *gone,
                     int *worker_ended) {
    uint32_t size;
    char *seal = read_frame(0, CONTROL_MAX, &size);
    if (!seal || !frame_type_is(seal, "seal") ||
        !string_field(seal, "nonce", nonce_out, NONCE_MAX)) {
        free(seal);
        return 0;
    }
    long long deadline = now_ms() + int_field(seal, "timeout_ms", 300000) + DEADLINE_GRACE_MS;
    free(seal);
    *oom_before = oom_kills();
    *gone = 0;
    int finished = 0;
    long long settle_by = 0;
    for (;;) {
        /* Resident: after `finish`, a Node that began its last frames may still be about to
         * say how it ended, and one that leaves may still be exiting: a moment for both. */
        int settling = !*gone && (child->leaving || (child->began && !child->ended));
        if (finished && (!settling || now_ms() >= settle_by)) break;
        struct pollfd fds[3] = {{.fd = finished ? -1 : 0, .events = POLLIN},
                                {.fd = *gone ? -1 : child->pidfd, .events = POLLIN},
                                {.fd = *gone ? -1 : child->control_fd, .events = POLLIN}};
        /* Once the run is over only `finish` is awaited; until then, the backstop deadline. */
        int over = *gone || child->ended || child->leaving;
        long long left = (finished ? settle_by : deadline) - now_ms();
        int timeout = !finished && over ? -1 : (int)(left > 0 ? left : 0);
        int ready = poll(fds, 3, timeout);
        if (ready < 0 && errno == EINTR) continue;
        if (ready > 0 && fds[2].revents) {
            hear(child);
            continue;
        }
        if (ready > 0 && fds[0].revents) {
            char *message = read_frame(0, CONTROL_MAX, &size);
            if (!message) return 0;
            if (frame_type_is(message, "finish")) {
                /* the worker took the run's end frame within every limit */
                *worker_ended = true_field(message, "ended");
                finished = 1;
                settle_by = now_ms() + SETTLE_PATIENCE_MS;
            }
            free(message);
            continue;
        }
        int exited_itself = ready > 0 && fds[1].revents;
        if (!exited_itself && (finished || *gone || child->ended || child->leaving))
            continue; /* the settling moment ran out: the loop's head tells */
        /* the run's Node ended, or the backstop deadline passed */
        kill_all(child); /* whatever the run started goes with it; reaps the run's Node too */
        if (exited_itself && child->status >= 0) report_crash(child);
        char fields[96];
        status_fields(child->status, fields, sizeof fields);
        send_message(MARKER, "{\"t\": \"exited\", \"nonce\": \"%s\", \"oom\": %s, %s}", nonce_out,
                     oom_kills() > *oom_before ? "true" : "false", fields);
        *gone = 1;
    }
    return 1;
}

/* A fresh Node after everything of the last one is gone; whether all of it could be. */
static int renew(struct child *child) {
    int clean = kill_all(child) && clean_up();
    forget(child);
    return clean && spawn(child);
}

int main(int argc, char **argv) {
    if (argc > 1) heap_mb = argv[1];
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return 3;
    if (getpid() != 1) return 4; /* kill(-1) would reach beyond the container */

    uint32_t bind_size;
    char *bind = read_frame(0, JOB_MAX, &bind_size);
    char nonce[NONCE_MAX];
    if (!bind || !frame_type_is(bind, "bind") || !string_field(bind, "nonce", nonce, NONCE_MAX) ||
        !field_value(bind, "source"))
        return 2;
    resident = true_field(bind, "resident");
    rss_max = number_field(bind, "rss_max", 0, 1LL << 50);
    clean_up();
    struct child child;
    if (!spawn(&child)) return 5;
    send_message(MARKER, "{\"t\": \"ready\", \"nonce\": \"%s\"}", nonce);
    for (;;) {
        uint32_t job_size;
        char *job = read_frame(0, JOB_MAX, &job_size);
        if (!job) { /* the worker closed stdin */
            kill_all(&child);
            return 0;
        }
        /* Resident: the kept Node may have ended since (something it left running ended it);
         * the run gets a fresh one rather than a dead pipe. */
        if (resident && !child.fresh && !alive(&child) && !renew(&child)) return 6;
        hand_over(&child, bind, bind_size, job, job_size);
        free(job);
        long oom_before = 0;
        int gone = 0, worker_ended = 0;
        if (!supervise(&child, nonce, &oom_before, &gone, &worker_ended)) {
            kill_all(&child);
            return 0;
        }
        char fields[96];
        if (resident) {
            /* Kept: the run ended and said so, the worker took its end within every limit,
             * its Node is alive, small enough, and nothing else of the run is left. /tmp and
             * the Node's memory stay, as on Lambda. */
            long long rss = -1;
            if (worker_ended && child.ended && !child.leaving && !gone && alive(&child))
                rss = rss_bytes(child.pid);
            if (rss >= 0 && rss <= rss_max && kill_others(&child) && alive(&child)) {
                status_fields(-1, fields, sizeof fields);
                send_message(MARKER, "{\"t\": \"done\", \"nonce\": \"%s\", \"clean\": true, "
                             "\"oom\": %s, %s, \"kept\": true}", nonce,
                             oom_kills() > oom_before ? "true" : "false", fields);
                continue;
            }
            kill_all(&child);
            status_fields(child.status, fields, sizeof fields); /* before renew starts the next */
            int clean = renew(&child);
            send_message(MARKER, "{\"t\": \"done\", \"nonce\": \"%s\", \"clean\": %s, \"oom\": %s, "
                         "%s, \"kept\": false}", nonce, clean ? "true" : "false",
                         oom_kills() > oom_before ? "true" : "false", fields);
            if (!clean) return 6;
            continue;
        }
        int killed = kill_all(&child);
        close(child.pidfd);
        int clean = killed && clean_up();
        status_fields(child.status, fields, sizeof fields); /* before spawn starts the next */
        if (clean && !spawn(&child)) clean = 0;
        send_message(MARKER, "{\"t\": \"done\", \"nonce\": \"%s\", \"clean\": %s, \"oom\": %s, %s}",
                     nonce, clean ? "true" : "false", oom_kills() > oom_before ? "true" : "false",
                     fields);
        if (!clean) return 6;
    }
}

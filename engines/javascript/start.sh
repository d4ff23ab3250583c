#!/bin/sh
# Code Actions JavaScript engine launcher: sets up the descriptors, runs node on the harness,
# and reports a crash of node itself (heap out of memory) as a proper failed run.
#
#   fd 3  the container's stdout: the harness's frame channel (it moves it to a private,
#         close-on-exec descriptor before any user code runs)
#   fd 1  a FIFO in /tmp that the harness drains: whatever the user code or its child
#         processes print there comes back only inside the one `stdout` frame
#   fd 4  the same FIFO opened read-write, only so that opening fd 1 does not block; the
#         harness opens its own read end, closes fd 4 and unlinks the FIFO before it reads
#         the job, so no user code ever sees the FIFO's name
#   fd 2  stays the container's stderr (never read as frames): node's own fatal messages
#         still reach the worker's crash report
#
# Node cannot dup2(), and a shell cannot make a pipe without a second process; a FIFO that
# exists only until the harness has started gives the harness both ends. If /tmp is not
# writable the harness still runs, with fd 1 pointed at /dev/null and only in-process output
# (console, process.stdout/stderr) captured.
#
# V8's old space is sized under the container's memory limit (cgroup v2 or v1), so a memory
# hog stops with V8's "heap out of memory" abort instead of growing into the kernel's OOM
# killer (Buffers live outside that heap and still meet the cgroup limit). This shell stays
# as node's parent: when node dies of a signal before the harness began its last frames, it
# writes the error log and `end` frames itself, naming the heap limit when node's fatal-error
# report says the heap ran out. Staying the parent also keeps node from being PID 1 without
# an init, which it must not be (see hardExit in harness.js).
#
# Warm environments (engines/PROTOCOL.md): `start.sh serve` runs the supervisor (PID 1) in
# place of this shell; it starts every run's Node as `start.sh warm-run`, which execs node
# with nothing in between (no shell may hold the supervisor's descriptors where the run could
# open them through /proc); the supervisor writes the crash report frames itself then. A
# resident environment (bind frame "resident": true) starts its Node as `start.sh
# resident-run`: the same, except that it serves run after run (jobs on fd 6, its control
# pipe on fd 5, no ended marker file: it tells the supervisor on that pipe).
mode=${1:-}
unset NODE_OPTIONS NODE_PATH NODE_REPL_EXTERNAL_MODULE

heap_mb=
for limit_file in /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes; do
    if [ -r "$limit_file" ] && read -r limit <"$limit_file"; then
        case $limit in
            '' | *[!0-9]*) ;; # "max": no limit
            *)
                mb=$((limit / 1048576))
                if [ "$mb" -ge 96 ] && [ "$mb" -lt 1048576 ]; then
                    reserve=$((mb / 4))
                    [ "$reserve" -lt 48 ] && reserve=48
                    heap_mb=$((mb - reserve))
                fi
                ;;
        esac
        break
    fi
done

# --no-addons: no native code loaded into the harness's process; --dns-result-order=ipv4first:
# containers rarely route IPv6; --experimental-global-webcrypto: `crypto` is the Web Crypto
# global, as in Node >= 19. --stack-size stays at V8's default (~984 KiB), well inside the
# 8 MiB main thread stack: deep recursion is a catchable RangeError, never a segfault.
set -- --no-addons --dns-result-order=ipv4first --experimental-global-webcrypto
[ -n "$heap_mb" ] && set -- "$@" "--max-old-space-size=$heap_mb"
set -- "$@" /opt/codeactions/harness.js

if [ "$mode" = serve ]; then
    exec /opt/codeactions/supervisor "$heap_mb"
fi

fifo=/tmp/.codeactions-stdout-$$
if ! mkfifo -m 600 "$fifo" 2>/dev/null; then
    [ "$mode" = warm-run ] && set -- "$@" "" "" warm
    [ "$mode" = resident-run ] && set -- "$@" "" "" resident
    if [ "$$" != 1 ]; then
        exec /usr/bin/node "$@" 3>&1
    fi
    /usr/bin/node "$@" 3>&1
    exit
fi

ended=/tmp/.codeactions-ended-$$ # the harness creates it before its last frames
report=.codeactions-fatal-$$.json
if [ "$mode" = warm-run ]; then
    exec /usr/bin/node --report-on-fatalerror --report-directory=/tmp --report-filename="$report" \
        "$@" "$fifo" "$ended" warm 3>&1 4<>"$fifo" 1>"$fifo"
fi
if [ "$mode" = resident-run ]; then
    exec /usr/bin/node --report-on-fatalerror --report-directory=/tmp --report-filename="$report" \
        "$@" "$fifo" "" resident 3>&1 4<>"$fifo" 1>"$fifo"
fi
# In a subshell: dash applies a command's redirections in the parent too while it waits, and
# this shell must not hold the FIFO open (the harness waits for its EOF).
(
    exec /usr/bin/node --report-on-fatalerror --report-directory=/tmp --report-filename="$report" \
        "$@" "$fifo" "$ended" 3>&1 4<>"$fifo" 1>"$fifo"
)
status=$?

# 137 (SIGKILL) is left to the worker: the kernel's OOM killer, its own kill at the timeout,
# or the harness cutting its own exit short after a complete set of frames.
if [ "$status" -gt 128 ] && [ "$status" != 137 ] && [ ! -e "$ended" ]; then
    event=
    if [ -r "/tmp/$report" ]; then
        event=$(sed -n 's/^ *"event": "\(.*\)",$/\1/p' "/tmp/$report" | head -n 1 | tr -d '"\\')
    fi
    case $event in
        *"heap out of memory"*)
            error="JavaScript heap out of memory${heap_mb:+ (heap limit $heap_mb MiB)}"
            ;;
        ?*) error="the JavaScript engine aborted: $event" ;;
        *) error="the JavaScript engine was killed by signal $((status - 128))" ;;
    esac
    # One frame: 4-byte big-endian length, then the JSON (ASCII here, so length = bytes).
    octal() { printf '\\%03o' $(($1 & 255)); }
    frame() {
        n=${#1}
        printf "$(octal $((n >> 24)))$(octal $((n >> 16)))$(octal $((n >> 8)))$(octal "$n")%s" "$1"
    }
    frame "{\"t\": \"log\", \"level\": \"error\", \"content\": \"Action execution failed: $error\"}"
    frame "{\"t\": \"end\", \"status\": \"failed\", \"error\": \"$error\"}"
fi
exit "$status"

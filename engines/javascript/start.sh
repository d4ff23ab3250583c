#!/bin/sh
# Code Actions JavaScript engine launcher: sets up the descriptors, then execs node on the
# harness (so node is the only process left; it is the one the worker's docker-init reaps).
#
#   fd 3  the container's stdout: the harness's frame channel (it moves it to a private,
#         close-on-exec descriptor before any user code runs)
#   fd 1  a FIFO in /tmp that the harness drains: whatever the user code or its child
#         processes print there comes back only inside the one `stdout` frame
#   fd 4  the same FIFO opened read-write, only so that opening fd 1 does not block; the
#         harness opens its own read end, closes fd 4 and unlinks the FIFO before it reads
#         the job, so no user code ever sees the FIFO's name
#   fd 2  stays the container's stderr (never read as frames): node's own fatal messages,
#         such as "JavaScript heap out of memory", reach the worker's crash report
#
# Node cannot dup2(), and a pipe cannot be made by a shell without a second process; a FIFO
# that exists only between this line and the harness's start-up gives the harness both ends.
# If /tmp is not writable the harness still runs, with fd 1 pointed at /dev/null and only
# in-process output (console, process.stdout/stderr) captured.
#
# V8's old space is sized under the container's memory limit (cgroup v2 or v1), so a memory
# hog stops with V8's "JavaScript heap out of memory" (exit 134) instead of growing into the
# kernel OOM killer; Buffers live outside that heap and still meet the cgroup limit.
unset NODE_OPTIONS NODE_PATH NODE_REPL_EXTERNAL_MODULE

heap=
for limit_file in /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes; do
    if [ -r "$limit_file" ] && read -r limit <"$limit_file"; then
        case $limit in
            '' | *[!0-9]*) ;; # "max": no limit
            *)
                mb=$((limit / 1048576))
                if [ "$mb" -ge 96 ] && [ "$mb" -lt 1048576 ]; then
                    reserve=$((mb / 4))
                    [ "$reserve" -lt 48 ] && reserve=48
                    heap="--max-old-space-size=$((mb - reserve))"
                fi
                ;;
        esac
        break
    fi
done

# --no-addons: no native code loaded into the harness's process (child processes are the
#   sandbox's business); --dns-result-order=ipv4first: containers rarely route IPv6;
# --experimental-global-webcrypto: `crypto` is the Web Crypto global, as in Node >= 19.
# --stack-size is left at V8's default (~984 KiB), well inside the 8 MiB main thread stack:
#   deep recursion is a catchable RangeError, never a segfault.
set -- --no-addons --dns-result-order=ipv4first --experimental-global-webcrypto $heap \
    /opt/codeactions/harness.js

fifo=/tmp/.codeactions-stdout-$$
if mkfifo -m 600 "$fifo" 2>/dev/null; then
    exec /usr/bin/node "$@" "$fifo" 3>&1 4<>"$fifo" 1>"$fifo"
fi
exec /usr/bin/node "$@" 3>&1

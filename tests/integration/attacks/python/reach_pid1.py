import os

# PID 1 (the init of a one-run container, the supervisor of a warm environment) runs as the
# run's uid; undumpable, none of it is the run's to read.
PROBES = {
    "/proc/1/environ": lambda p: open(p, "rb").read(1),
    "/proc/1/fd": os.listdir,
    "/proc/1/mem": lambda p: open(p, "rb").close(),
    "/proc/1/maps": lambda p: open(p, "rb").read(1),
    "/proc/1/root": os.listdir,
}


def Run(engine):
    reached = []
    for path, probe in PROBES.items():
        try:
            probe(path)
            reached.append(path)
        except OSError:
            pass
    engine.result.set("pid 1 out of reach" if not reached else "reached " + " ".join(reached))

import os


def Run(engine):
    seen = dict(os.environ)
    for path in ("/proc/1/environ", "/proc/self/environ"):
        try:
            seen[path] = open(path, "rb").read().decode(errors="replace")
        except OSError as exc:
            seen[path] = str(exc)
    engine.result.set(seen, content_type="json")

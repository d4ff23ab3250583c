import os
import signal
import sys


def Run(engine):
    # Half a frame on the engine's own frame channel, then gone: the caller must learn at
    # once, not at the timeout.
    fd = next(m._frame_fd for m in list(sys.modules.values()) if hasattr(m, '_frame_fd'))
    os.write(fd, (1000).to_bytes(4, 'big') + b'{"t": "log", "level": "info", "content": "torn')
    os.kill(os.getpid(), signal.SIGKILL)

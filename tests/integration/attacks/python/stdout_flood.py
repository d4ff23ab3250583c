import sys


def Run(engine):
    line = 'A' * 1023 + '\n'
    for _ in range(4 * 1024):
        sys.stdout.write(line)
        sys.stderr.write(line)

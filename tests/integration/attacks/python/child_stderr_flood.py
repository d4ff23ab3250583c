import subprocess


def Run(engine):
    # A child writing to the stderr it inherited: 8 MiB against a 2 MiB output cap.
    subprocess.run(['sh', '-c', 'head -c 8388608 /dev/zero >&2'], stdout=subprocess.DEVNULL)
    engine.result.set('not stopped')

import subprocess


def Run(engine):
    subprocess.Popen(['sleep', '300'])
    engine.result.set('parent done')

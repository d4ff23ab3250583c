import time


def Run(engine):
    time.sleep(60)

import os


def Run(engine):
    # Every signal number at PID 1: a warm environment's supervisor must shrug them all off.
    refused = []
    for number in range(1, 65):
        try:
            os.kill(1, number)
        except OSError as exc:
            refused.append(f'{number}: {exc.strerror}')
    engine.result.set('sent' if not refused else f'refused {refused}')

def Run(engine):
    engine.result.set('x' * (3 * 1024 * 1024))

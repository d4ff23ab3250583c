def Run(engine):
    engine.result.set('ok')

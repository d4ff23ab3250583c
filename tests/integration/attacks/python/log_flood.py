def Run(engine):
    for i in range(5000):
        engine.log.info(i)

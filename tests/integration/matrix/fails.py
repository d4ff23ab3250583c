def Run(engine):
    engine.log.info("before")
    raise RuntimeError("boom")

def Run(engine):
    # A 1xx is no final answer: the caller would get an empty reply.
    engine.result.set('switching', status_code=101)

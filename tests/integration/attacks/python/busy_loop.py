def Run(engine):
    while True:
        pass

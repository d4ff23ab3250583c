def Run(engine):
    with open('/tmp/fill', 'wb') as f:
        while True:
            f.write(b'x' * 1024 * 1024)

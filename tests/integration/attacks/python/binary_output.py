import os


def Run(engine):
    os.write(1, b'\xff\xfe\x00\x80 raw bytes')
    engine.log.info('nul\x00inside')
    engine.result.set('bin\udcff')

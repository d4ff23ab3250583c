def Run(engine):
    open('/usr/evil', 'w').write('x')

async function Run(engine) {
  process.stdout.write(Buffer.from([0xff, 0xfe, 0x00, 0x80]));
  engine.log.info('nul\u0000inside');
  engine.result.set('bin\udcff');
}

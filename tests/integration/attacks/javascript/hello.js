async function Run(engine) {
  engine.result.set('ok');
}

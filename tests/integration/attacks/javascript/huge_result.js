async function Run(engine) {
  engine.result.set('x'.repeat(3 * 1024 * 1024));
}

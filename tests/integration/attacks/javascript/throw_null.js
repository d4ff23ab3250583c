// Throwing nothing is still throwing: the run fails.
async function Run(engine) {
  engine.result.set('set before');
  throw null;
}

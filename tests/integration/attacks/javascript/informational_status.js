// A 1xx is no final answer: the caller would get an empty reply.
async function Run(engine) {
  engine.result.set('switching', { statusCode: 101 });
}

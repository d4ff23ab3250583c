async function Run(engine) {
  engine.log.info("before");
  throw new Error("boom");
}

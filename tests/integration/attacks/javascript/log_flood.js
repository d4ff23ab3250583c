async function Run(engine) {
  for (let i = 0; i < 5000; i++) engine.log.info(i);
}

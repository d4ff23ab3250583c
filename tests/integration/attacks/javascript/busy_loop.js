async function Run(engine) {
  while (true) {}
}

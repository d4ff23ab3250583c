async function Run(engine) {
  await new Promise((resolve) => setTimeout(resolve, 60000));
}

async function Run(engine) {
  const line = 'A'.repeat(1023) + '\n';
  for (let i = 0; i < 8 * 1024; i++) process.stdout.write(line);
}

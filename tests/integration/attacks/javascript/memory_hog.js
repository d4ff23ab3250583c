const hog = [];
async function Run(engine) {
  while (true) hog.push(Buffer.alloc(8 * 1024 * 1024, 1));
}

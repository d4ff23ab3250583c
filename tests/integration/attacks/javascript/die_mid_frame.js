const fs = require('fs');

// Half a frame on every pipe the process holds beyond stdio (one of them is the engine's
// frame channel), then gone: the caller must learn at once, not at the timeout.
async function Run(engine) {
  const torn = Buffer.concat([Buffer.from([0, 0, 3, 232]),
    Buffer.from('{"t": "log", "level": "info", "content": "torn')]);
  for (let fd = 3; fd < 32; fd++) {
    try {
      if (fs.fstatSync(fd).isFIFO()) fs.writeSync(fd, torn);
    } catch (err) { /* not open, or not ours to write */ }
  }
  process.kill(process.pid, 'SIGKILL');
}

